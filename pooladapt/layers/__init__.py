"""Drop-in pooling layers, one module per framework, imported only when used."""
