"""Compiler options for GROSR's own code (third-party code is not built)."""

GROSR_COPTS = ["-Werror", "-Wno-error=deprecated-declarations"]
