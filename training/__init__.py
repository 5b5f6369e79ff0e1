"""Training, apart from serving: synthetic speech (`synth`), self-distillation of MTP heads (`distill`) and the
`livecaptions train-mtp` command that runs them (`train_mtp`). Nothing that serves imports this package."""
