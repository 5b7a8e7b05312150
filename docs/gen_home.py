"""The site's home page (mkdocs-gen-files, while the site builds): the README, its links into docs/pages made
relative to the site, its figure copied in."""

from __future__ import annotations

import re
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
text = (ROOT / "README.md").read_text()
text = re.sub(r"\]\(docs/pages/([^)]+)\)", r"](\1)", text)
for image in re.findall(r"\]\((paper_figures/[^)]+\.png)\)", text):
    with mkdocs_gen_files.open(f"assets/{Path(image).name}", "wb") as f:
        f.write((ROOT / image).read_bytes())
    text = text.replace(f"]({image})", f"](assets/{Path(image).name})")
with mkdocs_gen_files.open("index.md", "w") as f:
    f.write(text)
