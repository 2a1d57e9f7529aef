"""One module per framework; each exposes ``BACKEND``, an instance of ``base.Backend``."""
