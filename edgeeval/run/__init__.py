"""The bench stage: runner (parent), worker (child), speed tests."""
