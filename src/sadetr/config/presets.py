"""Named ablation settings of the paper as config overrides (Tables 4-8, 10, 11, Figures 5-6).

Each preset is a dict of dotted keys (`"model.use_vtc": False`) applied on top of a QVHighlights config
and its recipe (`paper` by default; the tables are QVHighlights val ablations). A preset sets exactly the
switches of the components its table varies, never a reading, so a row resolves to the recipe plus that
row's switches. `TABLES` groups the presets by the table or figure they reproduce.
"""

from __future__ import annotations

from sadetr.core.errors import ConfigError

# Component groups of Table 4: FA (feature alignment), QI (query init), AD (span aware decoder), DN.
_FA = {
    True: {"model.use_vtc": True, "model.use_ctm": True},
    False: {"model.use_vtc": False, "model.use_ctm": False},
}
_QI = {
    True: {"model.anchor_init": "instance", "model.use_init_loss": True},
    False: {"model.anchor_init": "learnable", "model.use_init_loss": False},
}
_AD = {
    True: {"model.use_gaussian_mask": True, "model.use_span_enhance": True},
    False: {"model.use_gaussian_mask": False, "model.use_span_enhance": False},
}
_DN = {True: {"model.use_dn": True}, False: {"model.use_dn": False}}

# Table 4 rows: (FA, QI, AD, DN).
_TABLE4 = {
    "a": (False, False, False, False),
    "b": (True, False, False, False),
    "c": (False, True, False, False),
    "d": (False, False, True, False),
    "e": (False, False, False, True),
    "f": (False, True, False, True),
    "g": (False, True, True, False),
    "h": (False, True, True, True),
    "i": (True, True, False, True),
    "j": (True, True, True, True),
}


def _build() -> dict[str, dict[str, object]]:
    presets: dict[str, dict[str, object]] = {}
    for row, (fa, qi, ad, dn) in _TABLE4.items():
        presets[f"table4.{row}"] = {**_FA[fa], **_QI[qi], **_AD[ad], **_DN[dn]}
    # Table 5 (query initializer); the last row is the full model.
    presets["table5.baseline"] = {"model.anchor_init": "learnable", "model.use_init_loss": False}
    presets["table5.dynamic_anchor"] = {"model.anchor_init": "instance", "model.use_init_loss": False}
    presets["table5.init_loss"] = {"model.anchor_init": "instance", "model.use_init_loss": True}
    # Table 6 (span aware query refiner): modulate = Gaussian mask, enhance = Span Based Enhance Block.
    for name, modulate, enhance in (
        ("none", False, False),
        ("modulate", True, False),
        ("enhance", False, True),
        ("both", True, True),
    ):
        presets[f"table6.{name}"] = {"model.use_gaussian_mask": modulate, "model.use_span_enhance": enhance}
    # Table 7 (align stage of L_vtc and L_ctm).
    for vtc in ("before", "after"):
        for ctm in ("before", "after"):
            presets[f"table7.vtc_{vtc}_ctm_{ctm}"] = {
                "model.use_vtc": True,
                "model.use_ctm": True,
                "model.vtc_stage": vtc,
                "model.ctm_stage": ctm,
            }
    # Table 8 (contrastive denoise learning).
    presets["table8.no_contrastive"] = {"model.use_dn": True, "model.dn_negatives": False}
    presets["table8.curriculum"] = {
        "model.use_dn": True,
        "model.dn_negatives": True,
        "model.dn_schedule": "curriculum",
    }
    presets["table8.fixed_margin"] = {
        "model.use_dn": True,
        "model.dn_negatives": True,
        "model.dn_schedule": "fixed",
    }
    # Table 10 (feature align losses).
    for name, with_vtc, with_ctm in (
        ("none", False, False),
        ("vtc", True, False),
        ("ctm", False, True),
        ("both", True, True),
    ):
        presets[f"table10.{name}"] = {"model.use_vtc": with_vtc, "model.use_ctm": with_ctm}
    # Figure 6 (number of noise groups N_n; the paper's best is 5).
    for groups in range(1, 11):
        presets[f"fig6.groups_{groups}"] = {"model.use_dn": True, "model.num_dn_groups": groups}
    # Figure 5 (convergence): SA-DETR with and without denoise learning.
    presets["fig5.with_dn"] = {"model.use_dn": True}
    presets["fig5.without_dn"] = {"model.use_dn": False}
    # Table 11 (component generalizability): SA-DETR's instance-related anchors ("dynamic anchor", as
    # Table 5's row of that name: without L_init) and Gaussian mask grafted onto QD-DETR, cumulatively.
    qd = {"model.name": "qd_detr", "model.use_init_loss": False}
    presets["table11.qd_detr"] = {**qd, "model.qd_dynamic_anchor": False, "model.qd_gaussian_mask": False}
    presets["table11.dynamic_anchor"] = {
        **qd,
        "model.qd_dynamic_anchor": True,
        "model.qd_gaussian_mask": False,
    }
    presets["table11.gaussian_mask"] = {**qd, "model.qd_dynamic_anchor": True, "model.qd_gaussian_mask": True}
    return presets


PRESETS: dict[str, dict[str, object]] = _build()

# Table or figure -> what it shows; its rows are the presets named `<table>.<row>`, in `PRESETS` order.
TABLES: dict[str, str] = {
    "table4": "Table 4: components (FA, QI, AD, DN), QVHighlights val",
    "table5": "Table 5: the Query Initializer",
    "table6": "Table 6: the Span Aware Query Refiner (Gaussian modulation, span enhance)",
    "table7": "Table 7: the stage of L_vtc and L_ctm (before / after fusion)",
    "table8": "Table 8: contrastive denoise learning",
    "table10": "Table 10: the feature align losses L_vtc and L_ctm",
    "table11": "Table 11: SA-DETR's anchors and Gaussian mask grafted onto QD-DETR",
    "fig5": "Figure 5: convergence with and without denoise learning",
    "fig6": "Figure 6: the number of noise groups N_n",
}


def list_presets() -> list[str]:
    """Names of all presets, sorted."""
    return sorted(PRESETS)


def table_rows(table: str) -> list[str]:
    """The preset names of one table of `TABLES`, in the paper's row order; unknown -> ConfigError."""
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; valid: {', '.join(TABLES)}", "table")
    return [name for name in PRESETS if name.split(".")[0] == table]


def get_preset(name: str) -> dict[str, object]:
    """The overrides (dotted key -> value) of preset `name`; unknown name -> ConfigError listing the names."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(list_presets())}", "preset")
    return dict(PRESETS[name])
