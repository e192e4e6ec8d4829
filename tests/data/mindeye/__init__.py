"""MindEye1/MindEye2 download fixtures (see make_fixture.py)."""
