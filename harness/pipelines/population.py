"""The generated population (``harness/population``): importing it makes the draws'
names (``pop_c0017``, ``pop_t0042``) resolvable wherever the pipeline registry is
loaded, the workers included. Nothing is registered: the family is unbounded."""
import recipebench.harness.population  # noqa: F401  (adds the registry resolver)
