"""Drop-in compatible APIs: other vendors' request and response shapes in front of our engine."""
