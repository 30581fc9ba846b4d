"""Path choice: how our traffic reaches each peer (direct, or through a relay hub). No I/O."""
