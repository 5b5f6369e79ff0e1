"""livecaptions: self-hosted real-time captioning."""
