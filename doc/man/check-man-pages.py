#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The generated man pages are clean and complete.

  * every page lints without a single warning: `mandoc -T lint -W warning`
    when mandoc is installed, `groff -man -ww -z` otherwise;
  * every page renders with `man -l` (exit status 0, nothing on standard
    error, a NAME section naming the page);
  * the pages document what the code has, read from the sources:
      - tunnelgate.policy(5): every keyword of src/policy/policy-model.c's keyword
        table, each as a term (a line of its own starting with the keyword);
      - org.tunnelgate.TunnelGate1(5): every method, property and signal of
        dbus/*.xml, every error of src/common/tg-error.c and every polkit action
        of polkit/org.tunnelgate.policy;
      - tunnelgated(8): every option of src/daemon/main.c's GOptionEntry table, as
        a term of the OPTIONS section;
      - tunnelgatectl(1): every verb of src/ctl/tunnelgatectl.c's verb
        table, as a term of the VERBS section, and every (not hidden) option
        of src/ctl/*.c.

Usage: check-man-pages.py SOURCE_DIR PAGE...
(PAGE: the generated pages, named NAME.SECTION)
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

SOURCE = sys.argv[1]
PAGES = {os.path.basename(p): p for p in sys.argv[2:]}
del sys.argv[1:]

EXPECTED_PAGES = ("tunnelgated.8", "tunnelgatectl.1", "tunnelgate.policy.5",
                  "org.tunnelgate.TunnelGate1.5")

# The same result on every machine and for every user: no locale, pager,
# man configuration or terminal width from the caller's environment.
HOME = tempfile.mkdtemp(prefix="tg-man-")
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "HOME": HOME,
    "MANWIDTH": "80",
    "MANPAGER": "cat",
    "PAGER": "cat",
    "TERM": "dumb",
}

# A long option in a GOptionEntry table: { "name", 'c' or 0, flags, G_OPTION_ARG_...
OPTION_RE = re.compile(
    r'\{\s*"([a-z][a-z0-9-]*)"\s*,\s*(\'.\'|0)\s*,\s*([^,]*?)\s*,\s*G_OPTION_ARG_')


def read(relative):
    with open(os.path.join(SOURCE, relative), encoding="utf-8") as f:
        return f.read()


def block(text, start, what):
    """The body of the C initializer that `start` opens, up to its `};`."""
    begin = text.find(start)
    if begin < 0:
        raise AssertionError(f"{what}: '{start}' not found; has the source changed?")
    begin += len(start)
    end = re.compile(r"\n[ \t]*\};").search(text, begin)
    if end is None:
        raise AssertionError(f"{what}: no end of the table after '{start}'")
    return text[begin:end.start()]


def options_of(text):
    """(long name, short letter or None, hidden) of every GOptionEntry."""
    found = []
    for name, short, flags in OPTION_RE.findall(text):
        found.append((name, short[1] if short != "0" else None,
                      "G_OPTION_FLAG_HIDDEN" in flags))
    return found


def policy_keywords():
    table = block(read("src/policy/policy-model.c"), "tg_policy_keywords[TG_KW_COUNT] = {",
                  "policy keyword table")
    names = re.findall(r'=\s*(?:WORD|HOSTS|OTHER)\(\s*"(\w+)"', table)
    entries = re.findall(r"\[TG_KW_\w+\]\s*=", table)
    if not names or len(names) != len(entries):
        raise AssertionError(f"policy keyword table: {len(entries)} entries but "
                             f"{len(names)} names parsed; has the table's form changed?")
    return names


def daemon_options():
    table = block(read("src/daemon/main.c"), "GOptionEntry entries[] = {", "tunnelgated options")
    found = options_of(table)
    if not found:
        raise AssertionError("no GOptionEntry parsed in src/daemon/main.c")
    return found


def ctl_verbs():
    table = block(read("src/ctl/tunnelgatectl.c"), "static const CtlVerb verbs[] = {",
                  "tunnelgatectl verb table")
    verbs = re.findall(r'\{\s*"([a-z][a-z0-9-]*)"\s*,', table)
    if not verbs:
        raise AssertionError("no verb parsed in src/ctl/tunnelgatectl.c")
    return verbs


def ctl_options():
    found = []
    for path in sorted(glob.glob(os.path.join(SOURCE, "src", "ctl", "*.c"))):
        with open(path, encoding="utf-8") as f:
            found += [o for o in options_of(f.read()) if not o[2]]
    return found


def dbus_members():
    """(kind, interface, name) of every method, property and signal."""
    members = []
    for path in sorted(glob.glob(os.path.join(SOURCE, "dbus", "*.xml"))):
        root = ET.parse(path).getroot()
        for interface in root.iter("interface"):
            for kind in ("method", "property", "signal"):
                for element in interface.findall(kind):
                    members.append((kind, interface.get("name"), element.get("name")))
    if not any(kind == "method" for kind, _, _ in members):
        raise AssertionError("no D-Bus method found in dbus/*.xml")
    return members


def dbus_errors():
    errors = re.findall(r'"(org\.tunnelgate\.Error\.\w+)"', read("src/common/tg-error.c"))
    if not errors:
        raise AssertionError("no error name found in src/common/tg-error.c")
    return errors


def polkit_actions():
    root = ET.parse(os.path.join(SOURCE, "polkit", "org.tunnelgate.policy")).getroot()
    actions = [a.get("id") for a in root.iter("action")]
    if not actions:
        raise AssertionError("no polkit action found")
    return actions


def run(argv, width="80"):
    env = dict(ENV, MANWIDTH=width)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


_rendered = {}


def rendered(page):
    """The page as man(1) shows it, plain text, lines never wrapped (so that
    every term stays on its line whatever its length)."""
    if page not in _rendered:
        r = run(["man", "-l", "-P", "cat", PAGES[page]], width="1000")
        if r.returncode != 0:
            raise AssertionError(f"man -l {page}: exit status {r.returncode}: {r.stderr}")
        # overstrike formatting, should a man-db keep it
        _rendered[page] = re.sub(r".\x08", "", r.stdout)
    return _rendered[page]


def sections(text):
    """{SECTION NAME: [lines]} of a rendered page."""
    result = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Z0-9 ./()-]*$", line):
            current = line.strip()
            result.setdefault(current, [])
        elif current is not None:
            result[current].append(line)
    return result


def term_re(name):
    """A line that starts with NAME (after indentation) as a whole word."""
    return re.compile(r"^\s*" + re.escape(name) + r"(?![\w-])", re.MULTILINE)


def word_re(name):
    return re.compile(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])")


class ManPagesTest(unittest.TestCase):

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(HOME, ignore_errors=True)

    def test_all_pages_given(self):
        self.assertEqual(sorted(PAGES), sorted(EXPECTED_PAGES))
        for page, path in PAGES.items():
            self.assertTrue(os.path.getsize(path) > 0, f"{page} is empty")

    def test_lint(self):
        failures = []
        mandoc = shutil.which("mandoc", path=ENV["PATH"])
        for page in EXPECTED_PAGES:
            if mandoc:
                r = run([mandoc, "-T", "lint", "-W", "warning", PAGES[page]])
                tool = "mandoc -T lint -W warning"
            else:
                r = run(["groff", "-man", "-ww", "-z", PAGES[page]])
                tool = "groff -man -ww -z"
            if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
                failures.append(f"{tool} {page}: exit status {r.returncode}\n"
                                f"{r.stdout}{r.stderr}")
        self.assertEqual(failures, [], "\n".join(failures))

    def test_man_renders(self):
        failures = []
        for page in EXPECTED_PAGES:
            r = run(["man", "--warnings=w", "-l", "-P", "cat", PAGES[page]])
            name = page.rsplit(".", 1)[0]
            text = re.sub(r".\x08", "", r.stdout)
            if r.returncode != 0 or r.stderr.strip():
                failures.append(f"man -l {page}: exit status {r.returncode}: {r.stderr}")
            elif not re.search(r"^NAME\n\s+" + re.escape(name) + r" [-\u2010\u2212]", text,
                               re.MULTILINE):
                failures.append(f"man -l {page}: no NAME section naming {name}")
        self.assertEqual(failures, [], "\n".join(failures))

    def test_policy_keywords(self):
        text = rendered("tunnelgate.policy.5")
        missing = [k for k in policy_keywords() if not term_re(k).search(text)]
        self.assertEqual(missing, [], "policy keywords not documented as terms in "
                         "tunnelgate.policy(5)")
        # and the Match criteria
        for criterion in ("Match", "User", "Group", "All"):
            self.assertRegex(text, word_re(criterion))

    def test_dbus_api(self):
        text = rendered("org.tunnelgate.TunnelGate1.5")
        missing = [f"{kind} {interface}.{name}"
                   for kind, interface, name in dbus_members()
                   if not term_re(name).search(text) or not word_re(interface).search(text)]
        missing += [e for e in dbus_errors() if not word_re(e).search(text)]
        missing += [a for a in polkit_actions() if not word_re(a).search(text)]
        self.assertEqual(missing, [], "not documented in org.tunnelgate.TunnelGate1(5)")

    def test_daemon_options(self):
        options = sections(rendered("tunnelgated.8")).get("OPTIONS")
        self.assertIsNotNone(options, "tunnelgated(8) has no OPTIONS section")
        terms = [line.strip() for line in options if line.strip().startswith("-")]
        missing = []
        for name, short, _ in daemon_options() + [("help", "h", False)]:
            for option in [f"--{name}"] + ([f"-{short}"] if short else []):
                if not any(word_re(option).search(t) for t in terms):
                    missing.append(option)
        self.assertEqual(missing, [], "tunnelgated options not documented as terms of "
                         "OPTIONS in tunnelgated(8)")

    def test_ctl_verbs(self):
        text = rendered("tunnelgatectl.1")
        verbs = sections(text).get("VERBS")
        self.assertIsNotNone(verbs, "tunnelgatectl(1) has no VERBS section")
        verbs = "\n".join(verbs)
        missing = [v for v in ctl_verbs() if not term_re(v).search(verbs)]
        self.assertEqual(missing, [], "verbs not documented as terms of VERBS in "
                         "tunnelgatectl(1)")
        missing = []
        for name, short, _ in ctl_options() + [("help", "h", False)]:
            if not word_re(f"--{name}").search(text):
                missing.append(f"--{name}")
            if short and not word_re(f"-{short}").search(text):
                missing.append(f"-{short}")
        self.assertEqual(sorted(set(missing)), [], "tunnelgatectl options not documented "
                         "in tunnelgatectl(1)")


if __name__ == "__main__":
    unittest.main(verbosity=2)
