"""bingo's Triton kernels (installed as ``bingo.kernels``): the search's hot path on a GPU.

* :mod:`.philox`     the subset stream inside a kernel (bit-identical to bingo.engine.subsets);
* :mod:`.masks`      subset masks, and the K masked copies of a weight in one pass;
* :mod:`.linear`     all K variants of a Linear layer in one launch, each weight tile
                     formed on the fly as where(mask, W0, W) (no mask or copy in memory);
* :mod:`.accumulate` the significance update: one read and one write of the rule state
                     per step, each element's K decisions regenerated in registers;
* :mod:`.proxies`    the per-weight gradient proxies of one training step, one launch;
* :mod:`.ops`        the backend: the operations of bingo.engine.reference under the same names.

Importing :mod:`.ops` needs ``triton``. On a machine without a GPU the kernels run on
CPU tensors under ``TRITON_INTERPRET=1`` (set before this package is imported): that
is how the tests check them against the reference.
"""
