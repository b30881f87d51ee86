"""Build vendor/vega-offline/plots_template.html: DVC's `dvc plots show` page with vega inlined (no network needed).

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so it is blank offline. This page inlines the
minified builds instead and leaves out DVC's `{scripts}` placeholder (the CDN tags). .dvc/config names it
(`[plots] html_template`), so a plain `dvc plots show` uses it. Rebuild after upgrading vega:

    cd /tmp && npm pack vega@5 vega-lite@5 vega-embed@6 && for f in vega*.tgz; do mkdir -p "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done
    python3 scripts/build_plots_template.py /tmp
"""
from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "vendor" / "vega-offline" / "plots_template.html"
BUILDS = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js", "vega-embed": "build/vega-embed.min.js"}

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>rifelab: dvc plots show (offline)</title>
    <!-- {versions}; BSD-3-Clause, see vendor/vega-offline/LICENSE-*. Built by scripts/build_plots_template.py -->
{inlined}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    <noscript>This page needs JavaScript to draw the plots (vega is inlined: no network needed).</noscript>
    {plot_divs}
</body>
</html>
"""


def package_dir(root: Path, name: str) -> Path:
    """The unpacked `npm pack` folder of one package (e.g. /tmp/vega-5.33.1/package)."""
    found = sorted(p for p in root.glob(f"{name}-[0-9]*/package") if p.is_dir())
    if not found:
        raise SystemExit(f"no unpacked {name}-<version>/package under {root}: run the npm pack commands in this "
                         f"script's docstring first")
    return found[-1]


def build(root: Path) -> str:
    """The template text with the three minified builds inlined, in load order."""
    scripts, versions = [], []
    for name, build_path in BUILDS.items():
        pkg = package_dir(root, name)
        version = json.loads((pkg / "package.json").read_text())["version"]
        code = (pkg / build_path).read_text(encoding="utf8")
        code = re.sub(r"^//# sourceMappingURL=.*$", "", code, flags=re.M).rstrip()  # the .map files are not shipped
        for bad in ("</script", "{plot_divs}", "{refresh_tag}", "{scripts}"):
            if bad in code:
                raise SystemExit(f"{name} {version} contains {bad!r}: it cannot be inlined as is")
        versions.append(f"{name} {version}")
        scripts.append(f"    <script>/* {name} {version} */\n{code}\n    </script>")
    # DVC fills {refresh_tag} and {plot_divs} by plain text replacement; the doubled braces are for str.format here.
    return PAGE.format(versions=", ".join(versions), inlined="\n".join(scripts),
                       refresh_tag="{refresh_tag}", plot_divs="{plot_divs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("npm_dir", type=Path, help="folder holding the unpacked vega-*, vega-lite-*, vega-embed-* packages")
    args = parser.parse_args()
    tmp = OUT.with_suffix(".html.tmp")
    tmp.write_text(build(args.npm_dir), encoding="utf8")
    os.replace(tmp, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
