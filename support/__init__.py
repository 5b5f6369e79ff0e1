"""What tests/ and bench/ share, so that neither imports the other: the reference speech and its scoring
(`speech`), and a real `livecaptions serve` process (`server`)."""
