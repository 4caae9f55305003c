"""Compare the registered face detectors on real photos and compositions of them.

    python benchmarks/face_detectors.py            # every registered detector whose package is installed

For each case of ``tests/face_photos.py`` (grace_hopper, astronaut, small, rotated 25 deg,
occluded, two faces) prints one ``key=value`` line per detector: whether each true face was
found (its landmarks inside a detection with IoU >= 0.3), the IoU of that detection with the
hand-read box, the false positives; then per detector the recall over all faces, the mean IoU
of the found ones, the false positives and the CPU milliseconds per frame (process time, best
of 3 passes). Set ``ASTRONAUT_PNG`` to scikit-image's astronaut.png when scikit-image is not
installed (it is inside its wheel: skimage/data/astronaut.png).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

import benchmark  # noqa: E402,F401
import face_photos  # noqa: E402
import torch  # noqa: E402

from benchmark.errors import UserError  # noqa: E402
from benchmark.registry import FACE_DETECTORS, choices, load_all  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    load_all()
    cases = face_photos.all_cases()
    print(f"cases={len(cases)} faces={sum(len(t) for _, _, t in cases)} "
          f"astronaut={'yes' if face_photos.load('astronaut') is not None else 'no'}")
    for name in choices(FACE_DETECTORS):
        try:
            det = FACE_DETECTORS.get(name)()
        except (UserError, TypeError) as e:
            print(f"detector={name} skipped=\"{str(e).splitlines()[0][:120]}\"")
            continue
        found, ious, fps, cpu = 0, [], 0, []
        for case, frame, truth in cases:
            best = None
            for _ in range(3):
                t = time.process_time()
                boxes = det.detect_all([frame])[0]
                best = min(best or 1e9, time.process_time() - t)
            cpu.append(best)
            got, fp = face_photos.match(boxes, truth)
            found += sum(g is not None for g in got)
            ious += [g for g in got if g is not None]
            fps += fp
            print(f"detector={name} case={case} found={sum(g is not None for g in got)}/{len(truth)} "
                  f"iou={','.join('-' if g is None else f'{g:.2f}' for g in got)} false_pos={fp} "
                  f"cpu_ms={1000 * best:.0f}")
        n = sum(len(t) for _, _, t in cases)
        print(f"detector={name} recall={found}/{n} mean_iou={sum(ious) / max(1, len(ious)):.3f} "
              f"false_pos={fps} cpu_ms_per_frame={1000 * sum(cpu) / len(cpu):.0f}")


if __name__ == "__main__":
    main()
