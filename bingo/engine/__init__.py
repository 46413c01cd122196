"""The search engine and its backends: what runs after each training step. The
``TicketSearch`` (``search``, its checkpoint in ``search_state``, the borrowed model in
``borrow``), which tensors it works on (``targets``), the regenerable subsets
(``subsets``), the rules and proxies it folds in (``rules``, ``proxies``, ``regression``),
the kept examples (``calibration``), and the backends behind one dispatch point
(``dispatch``: ``reference`` (PyTorch, the specification), ``batched``/``fused`` (its
batched pass), ``cpp`` (C++), ``bingo.kernels`` (Triton))."""
