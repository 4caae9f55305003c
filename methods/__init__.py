"""one file per method; each registers itself in benchmark.registry.METHODS"""
