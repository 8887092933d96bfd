"""The benchmark harness behind ``make bench``: real processes, wrk over 127.0.0.1, SQLite."""
