"""Running experiments on it: the data (``data``), the model zoo (``models``, ``gpt``),
training (``training``), the baselines (``baselines``), the shared run every compared
method starts from (``shared_run``), the jobs of ``bingo prune`` and ``bingo compare``
(``jobs``, ``compare``, ``methods``, ``compare_report``, ``sanity``) and the CLI
(``cli``)."""
