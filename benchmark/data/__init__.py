"""Datasets on disk: FF++ layout, the generated SynthFF, face detection and crop extraction."""
