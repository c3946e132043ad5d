#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Turns `nft -j list table inet tunnelgate` (stdin) into sorted lines the C test
compares against: the table, its chains, sets (with elements), counters, rule counts."""
import json
import sys


def element(value):
    if isinstance(value, dict):
        if "range" in value:
            return "-".join(element(v) for v in value["range"])
        if "prefix" in value:
            return "%s/%s" % (element(value["prefix"]["addr"]), value["prefix"]["len"])
        if "concat" in value:
            return " . ".join(element(v) for v in value["concat"])
        if "elem" in value:
            return element(value["elem"]["val"])
        return json.dumps(value, sort_keys=True)
    return str(value)


def main():
    text = sys.stdin.read()
    if not text.strip():
        print("no table")
        return
    lines, rules = [], {}
    for item in json.loads(text)["nftables"]:
        if "table" in item:
            table = item["table"]
            flags = table.get("flags", [])
            if isinstance(flags, str):
                flags = [flags]
            lines.append("table %s flags=%s" % (table["name"], ",".join(sorted(flags))))
        elif "chain" in item:
            chain = item["chain"]
            line = "chain %s" % chain["name"]
            if "hook" in chain:
                line += " type=%s hook=%s prio=%s policy=%s" % (
                    chain["type"], chain["hook"], chain["prio"], chain["policy"])
            lines.append(line)
        elif "set" in item:
            s = item["set"]
            kind = s["type"] if isinstance(s["type"], str) else " . ".join(s["type"])
            flags = ",".join(sorted(s.get("flags", [])))
            elems = sorted(element(e) for e in s.get("elem", []))
            lines.append("set %s type=%s flags=%s elems=%s"
                         % (s["name"], kind, flags, ",".join(elems)))
        elif "counter" in item:
            c = item["counter"]
            lines.append("counter %s packets=%s" % (c["name"], c["packets"]))
        elif "rule" in item:
            rules[item["rule"]["chain"]] = rules.get(item["rule"]["chain"], 0) + 1
    for chain, count in rules.items():
        lines.append("rules %s=%d" % (chain, count))
    for line in sorted(lines):
        print(line)


main()
