"""Link counters from agents: samples (raw 1 h, 1-minute aggregates 7 d), presence, dashboard fan-out."""
