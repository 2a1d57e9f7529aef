"""Test helpers for pooladapt and for code built on it (``pip install 'pooladapt[test]'``).

``pooladapt.testing.strategies`` has hypothesis strategies for random pooling cases and inputs.
"""
