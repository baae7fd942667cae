"""The model API of an in-memory transformers model: batched log-likelihoods (``scoring``),
batched generation with stop strings (``generate``) and the ``ModelAPI`` over both (``model``).
Shared by the ``hf`` backend and the test kit's fake model."""
