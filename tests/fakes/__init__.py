"""Hand-written fakes of external systems (STYLE: fakes over mocks)."""
