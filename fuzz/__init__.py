"""Coverage-guided fuzz harnesses for every wire and file parser (docs/fuzzing.md)."""
