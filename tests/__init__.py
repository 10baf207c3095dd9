"""scalekit test suite (a package, so test modules of different folders may share names)."""
