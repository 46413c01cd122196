"""bingo inside training frameworks: ``lightning.BingoPruning`` (PyTorch Lightning) and
``transformers.BingoCallback`` (Hugging Face ``Trainer``), optional extras
(``pip install -e '.[lightning]'`` / ``'.[transformers]'``). Both drive one
``session.PruningSession``: the search built when the fit starts, stepped after each
optimizer step, pruning on schedule or at the end."""
