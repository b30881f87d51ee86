"""The pruning study's verdict: the target check, fine-tuned points against the lite cut, and the summary lines."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

def judge(table: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Any]:
    """The target check over the pruned configurations, and whether each fine-tuned point beats the lite cut."""
    pruned = table[table["config"] != "unpruned"]
    meets = pruned[(pruned["speedup"] >= p["target_speedup"]) & (pruned["speedup_ci_low"] >= p["target_ci_low"])
                   & (pruned["dpsnr"] >= -p["target_max_loss_db"])]
    within = pruned[pruned["dpsnr"] >= -p["target_max_loss_db"]]
    ft = pruned[pruned["finetuned"]]
    lite = ft[ft["method"] == "lite"]
    out: dict[str, Any] = {
        "target_met": bool(len(meets)),
        "target_config": meets.sort_values("speedup").iloc[-1]["config"] if len(meets) else None,
        "fastest_within_loss_budget": within.sort_values("speedup").iloc[-1]["config"] if len(within) else None,
        "fastest_within_loss_budget_speedup": float(within["speedup"].max()) if len(within) else None,
    }
    if len(ft):
        # the best fine-tuned point: meeting the target if any, else the fastest within the loss budget, else the
        # one with the smallest loss among those at least as fast as the target asks
        cand = meets if len(meets) else ft[ft["dpsnr"] >= -p["target_max_loss_db"]]
        best = cand.sort_values("speedup").iloc[-1] if len(cand) else ft.sort_values("dpsnr").iloc[-1]
        out.update({"best_config": best["config"], "best_speedup": float(best["speedup"]),
                    "best_speedup_ci_low": float(best["speedup_ci_low"]), "best_dpsnr": float(best["dpsnr"])})
    if len(lite):
        lt = lite.iloc[0]
        verdicts = {}
        for _, r in ft[ft["method"] != "lite"].iterrows():
            faster, better = r["speedup"] >= lt["speedup"], r["psnr"] >= lt["psnr"]
            verdicts[r["config"]] = ("beats lite" if faster and better else "loses to lite" if not faster and not better
                                     else "trade-off (faster, lower PSNR)" if faster else "trade-off (slower, higher PSNR)")
        out["vs_lite"] = verdicts
    return out


def sentences(table: pd.DataFrame, verdict: Mapping[str, Any], p: Mapping[str, Any], profile_share: pd.DataFrame,
               sens: pd.DataFrame | None, notes: list[str]) -> list[str]:
    base = table.set_index("config").loc["unpruned"]
    lines = [f"Unpruned RIFE 4.0: {base['psnr']:.2f} dB on {int(base['n_eval'])} held-out triplets, "
             f"{base['latency_ms']:.1f} ms per frame pair ({p['timing_clip']}, median of {p['timing_rounds']} "
             f"interleaved rounds)."]
    tgt = f">= {p['target_speedup']:g}x (95% interval from >= {p['target_ci_low']:g}x) at <= {p['target_max_loss_db']:g} dB"
    if verdict["target_met"]:
        r = table.set_index("config").loc[verdict["target_config"]]
        lines.append(f"**Target met** ({tgt}): {verdict['target_config']} runs {r['speedup']:.2f}x "
                     f"[{r['speedup_ci_low']:.2f}, {r['speedup_ci_high']:.2f}] at {r['dpsnr']:+.2f} dB.")
    else:
        lines.append(f"**Target missed** ({tgt}): no pruned configuration reaches it in this run.")
        if verdict.get("best_config"):
            lines.append(f"Best fine-tuned point (saved as best.pt): {verdict['best_config']} at {verdict['best_speedup']:.2f}x "
                         f"(interval from {verdict['best_speedup_ci_low']:.2f}x), {verdict['best_dpsnr']:+.2f} dB.")
        if verdict["fastest_within_loss_budget"]:
            lines.append(f"Fastest configuration within {p['target_max_loss_db']:g} dB: "
                         f"{verdict['fastest_within_loss_budget']} at {verdict['fastest_within_loss_budget_speedup']:.2f}x.")
        else:
            lines.append(f"No pruned configuration stays within {p['target_max_loss_db']:g} dB of the unpruned model.")
        fast = table[(table["config"] != "unpruned") & (table["speedup"] >= p["target_speedup"])]
        if len(fast):
            r = fast.sort_values("dpsnr").iloc[-1]
            why = (f"the distillation budget does not recover the last {-r['dpsnr'] - p['target_max_loss_db']:.2f} dB"
                   if r["dpsnr"] < -p["target_max_loss_db"] else
                   f"its interval's lower end, {r['speedup_ci_low']:.2f}x, is below {p['target_ci_low']:g}x")
            lines.append(f"Among the configurations at >= {p['target_speedup']:g}x, the smallest loss is {r['dpsnr']:+.2f} dB "
                         f"({r['config']}): {why}.")
    other = profile_share[profile_share["group"] == "other"]
    if len(other):
        lead = "Why, in part: " if not verdict["target_met"] else "Where the time goes: "
        lines.append(f"{lead}{100 * float(other['share'].iloc[0]):.0f}% of the measured forward "
                     "time is outside the convs (warps, resizes, concatenations), which no channel cut shortens; "
                     + ", ".join(f"block {int(b)} {100 * s:.0f}% of the time for {100 * m:.0f}% of the MACs"
                                 for b, s, m in profile_share[profile_share["block"] >= 0].groupby("block")[["share", "mac_share"]]
                                 .sum().itertuples()) + ".")
    if sens is not None and len(sens):
        worst = sens.sort_values("dpsnr").iloc[0]
        mild = sens[sens["ratio"] == sens["ratio"].max()].sort_values("dpsnr", ascending=False).iloc[0]
        lines.append(f"Sensitivity: the most fragile group is {worst['group']} ({worst['dpsnr']:+.2f} dB at "
                     f"{worst['ratio']:g} alone); {mild['group']} loses only {mild['dpsnr']:+.2f} dB at {mild['ratio']:g}.")
    for cfg, v in (verdict.get("vs_lite") or {}).items():
        lines.append(f"{cfg} vs the lite cut (fine-tuned alike): {v}.")
    return lines + notes
