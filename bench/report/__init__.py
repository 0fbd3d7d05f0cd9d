"""Reports are functions of the result store: tables, statistics, plots."""
