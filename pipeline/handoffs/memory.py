"""Whether patches fit in memory: the check before Step 0 cuts them and before Steps 1 and 2 hold a balanced set,
so that a setting too large for this machine is one line, not a MemoryError deep in the work."""
from __future__ import annotations

from pipeline.core.errors import ConfigError
from pipeline.core.vocabulary import EXTRA_BANDS, LAYER_NAMES


def memory_free() -> int:
    """Bytes of memory this process may still take: the memory free now, or less under an address-space limit
    (``ulimit -v``, RLIMIT_AS) where the system has one."""
    import psutil

    free = psutil.virtual_memory().available
    try:
        import resource
    except ImportError:  # Windows: no such limits
        return free
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return free
    return max(0, min(free, limit - psutil.Process().memory_info().vms))


def check_patches_fit(patches: int, patch_width: int, what: str, advice: str, share: float = 0.5) -> None:
    """Refuse ``patches`` patches of ``patch_width`` px (the float32 layers and a uint8 mask each) that would take
    more than ``share`` of the memory free now: one line, ``what`` would need about so many GiB; ``advice``. Counts
    the most layers a scene can have (the tutorial's 8 and the further bands)."""
    check_fits(patches * patch_width ** 2 * (4 * (len(LAYER_NAMES) + len(EXTRA_BANDS)) + 1), what, advice, share)


def check_fits(needed: int, what: str, advice: str, share: float = 0.5) -> None:
    """Refuse ``needed`` bytes that would take more than ``share`` of the memory free now: one line, ``what`` would
    need about so many GiB; ``advice``."""
    free = memory_free()
    if needed > share * free:
        raise ConfigError(f"{what} would need about {needed / 2**30:.1f} GiB, more than {share:.0%} of the "
                          f"{free / 2**30:.1f} GiB of memory free; {advice}")


def check_balanced_set_fits(per_class: int, n_classes: int, patch_width: int, share: float = 0.5) -> None:
    """Refuse a balanced set that would take more than ``share`` of the memory free now (Steps 1 and 2 hold it
    whole, and the CNN's input is a second copy)."""
    check_patches_fit(2 * per_class * n_classes, patch_width, f"per_class = {per_class}: the balanced set",
                      "choose a smaller per_class", share)
