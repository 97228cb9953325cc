"""Build .dvc/plots_offline.html: DVC's plots page with Vega, Vega-Lite 5 and vega-embed inlined,
so that `dvc plots show` draws its charts offline (DVC's own page loads them from a CDN).

A maintainer's tool, not a dependency of the app (it needs vl-convert-python, which bundles the
three libraries offline):
    pip install vl-convert-python && python tools/build_dvc_plots_template.py
    dvc config plots.html_template plots_offline.html     # relative to .dvc/ (already set)

DVC needs only `{plot_divs}` in a template; without `{scripts}` it adds none of its CDN tags.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import vl_convert as vlc

VL_VERSION = "5.21"
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
    <!-- Vega, Vega-Lite %(vl)s and vega-embed, inlined by tools/build_dvc_plots_template.py -->
    <script type="text/javascript">%(bundle)s</script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def build(out: Path) -> int:
    bundle = vlc.javascript_bundle(vl_version=VL_VERSION).replace("</script", "<\\/script")
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        assert placeholder not in bundle, f"the bundle holds DVC's placeholder {placeholder}"
    page = PAGE % {"vl": VL_VERSION, "bundle": bundle}
    out.write_text(page, encoding="utf8")
    return len(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / ".dvc"
                        / "plots_offline.html")
    args = parser.parse_args()
    print(f"wrote {args.out} ({build(args.out)} bytes)")


if __name__ == "__main__":
    main()
