"""Patching: activation patching and attribution patching between a clean and a corrupted prompt.

    >>> task = preset_task(bundle, "IOI: subject swapped")
    >>> heads = activation_patching(bundle, task, "head", progress=print)   # one forward per head, batched
    >>> heads.values                                    # [layer, head]; 1 = restores the clean answer, 0 = none
    >>> approx = attribution_patching(bundle, task)     # {"resid": ..., "head": ...} from 2 forwards + 1 backward
    >>> patching_correlation(heads, approx["head"])     # how far to trust the cheap estimate

Modules: `tasks` (PatchingTask, the presets, task_from_prompts, repeated_task, the page's pair choice), `patch`
(the metric, exact patching, PatchingResult, ablation on a task), `attribution` (attribution patching and its
correlation with exact patching) and `report` (both methods on
every site of a task, as the Circuits page shows them).
"""

from interp_core.patching.attribution import attribution_patching, patching_correlation
from interp_core.patching.patch import (
    KINDS,
    WEAK_CONTRAST,
    PatchingResult,
    Site,
    TaskAblation,
    ablate_on_task,
    activation_patching,
    logit_diff,
    patch_sites,
    sites_for,
)
from interp_core.patching.report import READING, PatchingReport, PatchingSection, patching_report
from interp_core.patching.tasks import (
    OWN_PAIR,
    PAIR_CHOICES,
    PRESET_NAMES,
    PRESETS,
    REPEATED_PRESET,
    PatchingInputError,
    PatchingTask,
    PromptPreset,
    TaskChoice,
    choose_task,
    preset_task,
    repeated_task,
    task_from_prompts,
)

__all__ = [
    "KINDS", "OWN_PAIR", "PAIR_CHOICES", "PRESETS", "PRESET_NAMES", "READING", "REPEATED_PRESET", "WEAK_CONTRAST",
    "PatchingInputError", "PatchingReport", "PatchingResult", "PatchingSection", "PatchingTask", "PromptPreset",
    "Site", "TaskAblation", "TaskChoice", "ablate_on_task", "activation_patching", "attribution_patching",
    "choose_task", "logit_diff", "patch_sites", "patching_correlation", "patching_report", "preset_task",
    "repeated_task", "sites_for", "task_from_prompts",
]
