"""Pure routing: overlay longest-prefix match and netmap diff plans. No I/O, no clock."""
