"""Quant core: pure, vectorised option maths. No I/O, no clock, no globals (DESIGN §5)."""
