#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""scdoc SOURCE.scd into a man page, without the empty paragraphs.

scdoc(1) writes a paragraph macro (.P) after every section header, before
every header and before every .RE; groff ignores them, but mandoc -T lint
warns about each ("PP after SH", "PP empty"). This drops the ones that
start no paragraph and moves a .P that precedes a .RE after it, so that
the page renders the same and lints clean.

scdoc also turns hyphenation and justification off (.nh, .ad l) before
.TH, whose macro turns them on again under groff: they are repeated after
.TH, so that names such as org.tunnelgate.manage or --config-dir are
never split across lines.

Usage: scdoc-man.py SCDOC SOURCE.scd OUTPUT
"""

import re
import subprocess
import sys

scdoc, source, output = sys.argv[1:4]

with open(source, "rb") as f:
    result = subprocess.run([scdoc], stdin=f, capture_output=True)
if result.returncode != 0:
    sys.stderr.write(f"{source}: " + result.stderr.decode(errors="replace"))
    sys.exit(1)

PARAGRAPH = (".P", ".PP", ".LP")
HEADER = re.compile(r"\.(SH|SS|TH)( |$)")

lines = result.stdout.decode("utf-8").split("\n")
changed = True
while changed:
    changed = False
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        following = lines[i + 1] if i + 1 < len(lines) else None
        if line in PARAGRAPH:
            if following == ".RE":
                out += [".RE", line]
                i += 2
                changed = True
                continue
            if (following is None or following in PARAGRAPH or HEADER.match(following)
                    or (out and HEADER.match(out[-1]))
                    or all(rest == "" for rest in lines[i + 1:])):
                i += 1
                changed = True
                continue
        out.append(line)
        i += 1
    lines = out

for i, line in enumerate(lines):
    if line.startswith(".TH "):
        lines[i + 1:i + 1] = [".nh", ".ad l"]
        break

with open(output, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
