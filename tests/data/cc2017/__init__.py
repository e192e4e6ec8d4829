"""CC2017 raw-layout fixture writer (see make_fixture.py)."""
