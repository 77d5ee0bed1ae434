#!/usr/bin/env python3
"""Counts test cases in Bazel's test.xml files: prints "passed failed skipped".

usage: count_test_results.py BAZEL_TESTLOGS_DIR
A test target whose log has no test cases (it crashed before gtest
reported) counts as one failure.
"""
import os
import sys
import xml.etree.ElementTree as ET


def main(root):
    passed = failed = skipped = 0
    for folder, _, files in os.walk(root, followlinks=True):
        if "test.xml" not in files:
            continue
        path = os.path.join(folder, "test.xml")
        try:
            tree = ET.parse(path)
        except ET.ParseError:
            failed += 1
            continue
        cases = list(tree.iter("testcase"))
        if not cases:
            failed += 1
            continue
        for case in cases:
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            elif (case.get("result") == "skipped" or case.get("status") == "notrun"
                  or case.find("skipped") is not None):
                skipped += 1
            else:
                passed += 1
    print(passed, failed, skipped)


if __name__ == "__main__":
    main(sys.argv[1])
