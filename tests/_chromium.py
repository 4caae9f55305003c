"""Headless Chromium for the report tests: the page's element boxes and which of them overlap."""
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# blocks a reader sees; two of them overlap when neither contains the other and their boxes share area
BLOCKS = "h1, h2, h3, p, li, figure, img, figcaption, table, caption, .warning, .note, .badge, dt, dd, label"
PROBE = """<script>
window.addEventListener('load', () => {
  const els = [...document.querySelectorAll('%s')].filter(e => e.getClientRects().length);
  const box = e => { const r = e.getBoundingClientRect();
                     return [r.left + scrollX, r.top + scrollY, r.right + scrollX, r.bottom + scrollY]; };
  const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : '')
                    + ' "' + e.textContent.trim().slice(0, 40) + '"';
  const boxes = els.map(box), out = [];
  for (let i = 0; i < els.length; i++) for (let j = i + 1; j < els.length; j++) {
    if (els[i].contains(els[j]) || els[j].contains(els[i])) continue;
    const [a, b] = [boxes[i], boxes[j]];
    const w = Math.min(a[2], b[2]) - Math.max(a[0], b[0]), h = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
    if (w > 1 && h > 1) out.push([name(els[i]), name(els[j]), Math.round(w), Math.round(h)]);
  }
  const page = document.documentElement;
  document.body.setAttribute('data-probe', JSON.stringify({overlaps: out, n: els.length,
                             width: page.scrollWidth, viewport: innerWidth}));
});
</script>""" % BLOCKS


def probe(report: Path, width: int, tmp: Path) -> dict:
    """Open a copy of ``report`` at ``width`` px with the probe script; its measurements."""
    page = tmp / f"probe_{width}.html"
    page.write_text(report.read_text().replace("</body>", PROBE + "\n</body>"))
    r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--window-size={width},1000",
                        "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    found = re.search(r"data-probe=\"([^\"]*)\"", r.stdout)
    assert found, "the probe did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
