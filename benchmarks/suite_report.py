"""The Markdown report of ``make bench`` (``runs/bench/report.md``) and the figures it judges: the
required keys, their targets and the verdict on each."""

from __future__ import annotations

from typing import Any

SECTIONS: tuple[str, ...] = ("metrics", "inference", "sampler", "training", "data_wait", "train_speed")
REQUIRED_KEYS: tuple[str, ...] = (
    "metrics_s_per_case", "metrics_speedup_vs_medpy", "metrics_max_abs_diff_vs_medpy",
    "inference_s_per_volume", "inference_ratio_vs_monai", "inference_max_abs_diff_vs_monai",
    "sampler_patches_per_s", "sampler_speedup_vs_torchio",
    "train_step_overhead_fraction", "unet3d_torch_train_patches_per_s",
    "unet3d_tf_train_patches_per_s", "achieved_gflops_torch", "cpu_peak_gflops",
)
PRECISION_KEYS: tuple[str, ...] = (
    "unet3d_torch_train_patches_per_s_fp32", "unet3d_torch_train_patches_per_s_bf16", "unet3d_torch_bf16_speedup",
    "unet3d_tf_train_patches_per_s_fp32", "unet3d_tf_train_patches_per_s_bf16", "unet3d_tf_bf16_speedup",
    "achieved_gflops_torch_fp32", "achieved_gflops_torch_bf16", "achieved_gflops_tf_fp32", "achieved_gflops_tf_bf16",
    "cpu_peak_gflops_bf16", "achieved_le_peak",
)
"""Top-level figures of the precision comparison and the GFLOP/s sanity check (``None``: not measured, e.g.
bf16 on a CPU without it, or ``--no-tf``)."""
DATA_WAIT_KEYS: tuple[str, ...] = (
    "train_data_wait_fraction_gpu_speed_no_prefetch", "train_data_wait_fraction_gpu_speed_prefetch",
    "train_data_wait_fraction_cpu_no_prefetch", "train_data_wait_fraction_cpu_prefetch",
)
"""Top-level figures of the data-wait section: the share of a training step spent waiting for its batch."""
TARGETS: dict[str, tuple[str, float, str]] = {
    "metrics_s_per_case": ("<=", 1.0, "≤ 1 s per case (5 metrics × 3 classes)"),
    "metrics_speedup_vs_medpy": (">=", 20.0, "≥ 20× medpy"),
    "metrics_max_abs_diff_vs_medpy": ("<=", 1e-6, "≤ 1e-6"),
    "inference_ratio_vs_monai": ("<=", 1.0, "≤ 1.0 (ours / MONAI)"),
    "inference_max_abs_diff_vs_monai": ("<=", 1e-5, "≤ 1e-5"),
    "sampler_speedup_vs_torchio": (">=", 2.0, "≥ 2× torchio Queue"),
    "train_step_overhead_fraction": ("<=", 0.05, "≤ 5 % of the step"),
}


def verdict(key: str, value: Any) -> str:
    """``pass`` / ``FAIL`` against ``TARGETS``, ``-`` without a target, ``n/a`` without a value."""
    if key not in TARGETS:
        return "-"
    if not isinstance(value, int | float) or value != value:
        return "n/a"
    op, limit, _ = TARGETS[key]
    ok = value <= limit if op == "<=" else value >= limit
    return "pass" if ok else "FAIL"




def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def render_report(results: dict[str, Any]) -> str:
    """The Markdown report of a results dict (as written to ``results.json``)."""
    s = results.get("sections", {})
    m = results.get("machine", {})
    lines = ["# brainbench performance benchmarks", ""]
    if results.get("quick"):
        lines += ["**Quick mode**: tiny volumes and networks, one repetition. A smoke test, not a measurement.", ""]
    lines += [f"Machine: {m.get('cpu_count')} CPU cores, {m.get('platform')}, native bf16 flags: "
              f"{', '.join(m.get('cpu_bf16_flags') or []) or 'none'}; torch {m.get('torch')} "
              f"({m.get('torch_threads')} threads), numpy {m.get('numpy')}. Load average at start "
              f"{_load(m.get('load_average_start'))}, at end {_load(m.get('load_average_end'))}: the machine is "
              "shared, so timings are noisy; every comparison is interleaved in one process and reports medians.",
              f"Data: {', '.join(m.get('subjects', [])) or '—'}. Total {results.get('total_s')} s "
              f"(per section: {results.get('section_seconds')}).", "", "## Summary", ""]
    rows = [[f"`{key}`", results.get(key), TARGETS.get(key, ("", 0, "—"))[2], verdict(key, results.get(key))]
            for key in REQUIRED_KEYS]
    lines += _table(["figure", "value", "target", "result"], rows)
    lines += ["Precision and GFLOP/s (U-Net training; `achieved_le_peak`: every achieved GFLOP/s at or below the "
              "matmul peak of its dtype and thread count):", ""]
    lines += _table(["figure", "value"], [[f"`{key}`", results.get(key)] for key in PRECISION_KEYS])
    for name in SECTIONS:
        if "error" in s.get(name, {}):
            lines += [f"**{name} failed**: `{s[name]['error']}`", ""]
    lines += _metrics_section(s.get("metrics", {})) + _inference_section(s.get("inference", {}))
    lines += _sampler_section(s.get("sampler", {})) + _training_section(s.get("training", {}))
    lines += _data_wait_section(s.get("data_wait", {})) + _train_speed_section(s.get("train_speed", {}))
    return "\n".join(lines).rstrip() + "\n"


def _load(values: Any) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "—"


def _metrics_section(r: dict[str, Any]) -> list[str]:
    if not r or "error" in r:
        return []
    return ["## Metrics (bench.evaluation.metrics vs medpy 0.5.2)", "",
            f"DSC, AVD, HD, HD95 and ASSD for CSF/GM/WM on {r.get('source')} {r.get('shape')} (prediction: the "
            f"reference shifted by one voxel with 10 % of boundary voxels relabelled): ours "
            f"{_fmt(r.get('metrics_s_per_case'))} s (median of {r.get('repeats')}), medpy "
            f"{_fmt(r.get('medpy_s_per_case'))} s ({r.get('medpy_repeats')} run): "
            f"{_fmt(r.get('metrics_speedup_vs_medpy'))}× faster; largest difference "
            f"{_fmt(r.get('metrics_max_abs_diff_vs_medpy'))}.", ""]


def _inference_section(r: dict[str, Any]) -> list[str]:
    if not r or "error" in r:
        return []
    st, runs, harness = r.get("settings", {}), r.get("runs", {}), r.get("harness_runs", {})
    clock = r.get("inference_ratio_clock")
    lines = ["## Sliding-window inference (bench.patching.inference vs MONAI sliding_window_inference)", "",
             f"Model: {st.get('model')}; patch {st.get('patch')}³, overlap {st.get('overlap')}, Gaussian blending "
             f"(sigma {st.get('sigma_scale')}), {st.get('sw_batch_size')} patches per call, "
             f"{st.get('torch_threads')} torch thread(s). Volume {st.get('volume_shape')} "
             f"({'cropped to the brain box + 4 voxels' if st.get('cropped_to_brain_box') else 'whole'}), "
             f"{r.get('inference_patches')} patches. Median of {st.get('repeats')} interleaved runs. Ratios use "
             f"{clock} seconds" + (" (one thread: CPU time leaves out waiting for a shared core)" if clock == "cpu"
                                   else "") + ".", ""]
    names = [("ours", "ours (predict_volume, pad_value=0)", r.get("inference_patches")),
             ("monai", "MONAI", r.get("inference_patches")),
             ("ours_f64", "ours with float64 Gaussian sums (before 2026-11-24)",
              r.get("inference_patches"))]
    rows = [[label, runs.get(k, {}).get("wall_s"), runs.get(k, {}).get("cpu_s"), n] for k, label, n in names]
    rows += [[f"stitching only (1×1×1 conv): {label}", harness.get(k, {}).get("wall_s"),
              harness.get(k, {}).get("cpu_s"), r.get("inference_patches")]
             for k, label in (("ours", "ours"), ("monai", "MONAI"), ("ours_f64", "ours, float64 sums (before)"))]
    lines += _table(["run", "wall s", "CPU s", "patches sent to the net"], rows)
    lines += [f"Ratio ours/MONAI {_fmt(r.get('inference_ratio_vs_monai'))} ({clock}; wall "
              f"{_fmt(r.get('inference_ratio_vs_monai_wall'))}, CPU {_fmt(r.get('inference_ratio_vs_monai_cpu'))}); "
              f"stitching alone {_fmt(r.get('inference_harness_ratio_vs_monai'))}. Probabilities differ by at most "
              f"{_fmt(r.get('inference_max_abs_diff_vs_monai'))}. Before (float64 sums): ratio "
              f"{_fmt(r.get('inference_f64_ratio_vs_monai'))}, stitching alone "
              f"{_fmt(r.get('inference_harness_f64_ratio_vs_monai'))}, largest difference "
              f"{_fmt(r.get('inference_f64_max_abs_diff_vs_monai'))}.",
              "",
              f"Skipping patches outside the brain (mask dilated by one voxel), on the whole "
              f"{r.get('full_volume_shape')} volume: {r.get('full_volume_patches_skipped')} of "
              f"{r.get('full_volume_patches')} patches ({_fmt(r.get('full_volume_skip_fraction_patches'))}) are not "
              f"sent to the network"
              + (f"; measured (one run each) {_fmt(r.get('full_volume_s_no_skip'))} s → "
                 f"{_fmt(r.get('full_volume_s_skip'))} s wall, saving {_fmt(r.get('full_volume_skip_saved_s'))} s "
                 f"({_fmt(r.get('full_volume_skip_saved_fraction'))} of the time)."
                 if "full_volume_s_no_skip" in r else
                 f"; about {_fmt(r.get('full_volume_est_s_no_skip'))} s → {_fmt(r.get('full_volume_est_s_skip'))} s "
                 "per volume at the measured wall cost per patch (estimate; not timed with --no-full-volume)."), ""]
    return lines


def _sampler_section(r: dict[str, Any]) -> list[str]:
    if not r or "error" in r:
        return []
    st, g = r.get("settings", {}), r.get("grid_sampler", {})
    lines = ["## Training patch sampling (bench.patching.sampler.PatchSampler vs torchio Queue + LabelSampler)", "",
             f"{st.get('patches')} foreground-centred {st.get('patch')}³ patches in batches of "
             f"{st.get('batch_size')} from {len(st.get('subjects', []))} subjects {st.get('volume_shape')}, "
             f"num_workers=0, median of {st.get('repeats')} interleaved runs (building the sampler/queue included).",
             ""]
    lines += _table(["sampler", "patches/s"], [[f"ours: {st.get('ours')}", r.get("sampler_patches_per_s")],
                                               [f"torchio: {st.get('torchio')}", r.get("torchio_patches_per_s")]])
    lines += [f"Speed-up {_fmt(r.get('sampler_speedup_vs_torchio'))}×."]
    if g:
        lines += ["", f"Grid mode alone (benchmarks/bench_patches.py, {g.get('subjects')} synthetic "
                  f"{g.get('volume_shape')} subjects, {g.get('mode')}): {_fmt(g.get('patches_per_s'))} patches/s "
                  f"({_fmt(g.get('patches_per_cpu_s'))} per CPU s), index built in {_fmt(g.get('construct_s'))} s, "
                  f"{_fmt(g.get('index_mb'))} MB of index for {g.get('epoch_patches')} patches per epoch."]
    return [*lines, ""]


def _training_section(r: dict[str, Any]) -> list[str]:
    if not r or "error" in r:
        return []
    st, t = r.get("settings", {}), r.get("torch_overhead", {})
    lines = ["## Training", "",
             f"{st.get('model')}, patch {st.get('patch')}³, batch {st.get('batch_size')}, {st.get('optimizer')}, "
             f"{st.get('loss')} loss, {st.get('steps_per_epoch')} steps per epoch from a {st.get('sampler')} "
             f"sampler on the subjects above; threads: {st.get('threads')}. FLOPs per patch (convolutions, "
             f"from their shapes): {_fmt(r.get('unet3d_forward_gflop_per_patch'))} GFLOP forward, "
             f"{_fmt(r.get('unet3d_backward_gflop_per_patch'))} backward (weight gradients, and input gradients "
             f"for every convolution but the first), {_fmt(r.get('unet3d_train_gflop_per_patch'))} GFLOP for a "
             f"training step (3 × forward would say {_fmt(r.get('unet3d_train_gflop_per_patch_3x_forward'))}).", "",
             f"### Time outside the network's step ({st.get('overhead_pairs')} pairs of epochs)", ""]
    rows = []
    for o in (t, r.get("tf_overhead", {})):
        if o:
            rows.append([o.get("framework"), o.get("fit_epoch_wall_s"), o.get("bare_epoch_wall_s"),
                         o.get("fit_epoch_cpu_s"), o.get("bare_epoch_cpu_s"), o.get("sampler_s_per_epoch"),
                         o.get("overhead_fraction_wall"), o.get("overhead_fraction_cpu"),
                         o.get("sampler_fraction_of_fit"), o.get("fit_train_patches_per_s")])
    lines += _table(["framework", "fit wall s/epoch", "bare wall s/epoch", "fit CPU s/epoch", "bare CPU s/epoch",
                     "sampler s/epoch", "overhead (wall)", "overhead (CPU)", "sampler / fit", "fit patches/s"], rows)
    lines += [f"Bare steps (same batches, already tensors, a twin network) run just before each adapter epoch, so "
              f"each pair sees the same load; overhead = median over pairs of 1 − bare / fit, headline in "
              f"{t.get('overhead_clock')} seconds. The fit epoch is timed from its first batch to the next epoch "
              "(end-of-epoch bookkeeping included); `sampler / fit` is timed inside the fit itself.", "",
              *_precision_lines(r.get("precision", {})),
              *_norm_lines(r.get("norm_speed", {})),
              "### GFLOP/s", "",
              *_peak_lines(r.get("peak", {}))]
    gf_rows = [["torch, adapter fit", r.get("unet3d_torch_train_patches_per_s"), r.get("achieved_gflops_torch")],
               ["torch, bare steps", t.get("bare_patches_per_s"), r.get("achieved_gflops_torch_bare")]]
    if "achieved_gflops_tf" in r:
        gf_rows.append(["tf, adapter fit", r.get("unet3d_tf_train_patches_per_s"), r.get("achieved_gflops_tf")])
    for framework in ("torch", "tf"):
        for dtype in ("fp32", "bf16"):
            if f"achieved_gflops_{framework}_{dtype}" in r:
                gf_rows.append([f"{framework}, adapter fit, {dtype} (precision comparison)",
                                r.get(f"unet3d_{framework}_train_patches_per_s_{dtype}"),
                                r.get(f"achieved_gflops_{framework}_{dtype}")])
    lines += _table(["path", "train patches/s", "GFLOP/s"], gf_rows)
    lines += _sanity_lines(r.get("sanity", {}))
    lines += ["### Settings tried (before/after, interleaved bare training steps)", ""]
    settings = r.get("torch_settings", [])
    base = settings[0]["patches_per_s"] if settings else None
    rows = [["torch", x["setting"], x["step_s"], x["patches_per_s"], x.get("gflops"),
             x["patches_per_s"] / base if base else None] for x in settings]
    xla = r.get("tf_xla", {})
    xla_rows = xla.get("rows", [])
    tf_base = xla_rows[0]["patches_per_s"] if xla_rows else None
    rows += [["tf", x["setting"], x["step_s"], x["patches_per_s"], x.get("gflops"),
              x["patches_per_s"] / tf_base if tf_base else None] for x in xla_rows]
    comp = r.get("torch_compile", {})
    if comp.get("status") == "ok":
        rows += [["torch", "eager (compile subprocess)", comp["eager_step_s"], comp["eager_patches_per_s"], None, 1.0],
                 ["torch", f"torch.compile (compiling took {_fmt(comp['compile_s'])} s)", comp["compiled_step_s"],
                  comp["compiled_patches_per_s"], None, comp["compiled_patches_per_s"] / comp["eager_patches_per_s"]]]
    lines += _table(["framework", "setting", "step s", "patches/s", "GFLOP/s", "× baseline"], rows)
    if comp and comp.get("status") != "ok":
        lines += [f"torch.compile: {comp.get('status')} ({comp.get('error', '')}"
                  f"{'after ' + str(comp.get('wall_s')) + ' s' if comp.get('status') == 'timeout' else ''}).", ""]
    elif not comp:
        lines += ["torch.compile: not run (`--compile-timeout 0`).", ""]
    else:
        lines += [f"torch.compile: the first compiled step took {_fmt(comp.get('compile_s'))} s (inductor reuses its "
                  "cache under /tmp/torchinductor_<user> when present; a cold compile takes minutes).", ""]
    if xla.get("status") == "failed":
        lines += [f"XLA: failed ({xla.get('error')}).", ""]
    lines += _recommendations(rows)
    return lines


def _precision_lines(p: dict[str, Any]) -> list[str]:
    """fp32 vs bf16 training patches/s per framework."""
    if not p:
        return []
    rows = [[fw, x.get("fp32"), x.get("bf16"), x.get("speedup_bf16"),
             ", ".join(x.get("skipped", [])) or "—"] for fw, x in p.items()]
    st = next(iter(p.values())).get("settings", {})
    return ["### Precision: fp32 vs bf16 (the adapters' fit)", "",
            f"{st.get('model')}, {st.get('patch')}³, batch {st.get('batch_size')}, {st.get('threads')} thread(s): "
            f"{st.get('rounds')} fits per precision, alternated, {st.get('epochs')} epochs of "
            f"{st.get('steps_per_epoch')} steps each (the first a warm-up); median epoch. bf16 = torch autocast / "
            "Keras mixed_bfloat16, loss and softmax in float32.", "",
            *_table(["framework", "fp32 patches/s", "bf16 patches/s", "bf16 / fp32", "not run (no native bf16)"],
                    rows)]


def _norm_lines(n: dict[str, Any]) -> list[str]:
    """Training patches/s per normalisation layer and framework."""
    frameworks = [fw for fw in ("torch", "tf") if fw in n]
    if not frameworks:
        return []
    norms = list(n[frameworks[0]])
    rows = [[norm, *(n[fw].get(norm) for fw in frameworks)] for norm in norms]
    return ["### Normalisation layers (`model.params.norm`, the adapters' fit)", "",
            "Same U-Net, batches and threads as the precision comparison, one fit per norm, in the precision "
            "`auto` picks (" + ", ".join(f"{fw} {p}" for fw, p in n.get("precision", {}).items()) + ").",
            "", *_table(["norm", *(f"{fw} patches/s" for fw in frameworks)], rows)]


def _peak_lines(peak: dict[str, Any]) -> list[str]:
    """The matmul peaks per dtype and thread count."""
    peaks, medians = peak.get("peak_gflops", {}), peak.get("median_gflops", {})
    rows = [[key.split("_")[0], key.split("_")[1].removesuffix("t"), value, medians.get(key)]
            for key, value in peaks.items()]
    return [f"Matmul peaks ({peak.get('matmul_size')}² torch matmul, best of {peak.get('repeats')}; the median "
            "beside it): each achieved figure below is compared with the peak of its own dtype and thread count.",
            "", *_table(["dtype", "threads", "peak GFLOP/s", "median GFLOP/s"], rows)]


def _sanity_lines(sanity: dict[str, Any]) -> list[str]:
    """Whether every achieved GFLOP/s is at or below its peak, and the fraction of it."""
    if not sanity:
        return []
    rows = [[c["figure"], c["dtype"], c["threads"], c["gflops"], c["peak_gflops"], c["fraction_of_peak"],
             {True: "ok", False: "ABOVE PEAK", None: "—"}[c["ok"]]] for c in sanity.get("checks", [])]
    verdict_line = ("**Sanity: every achieved GFLOP/s is at or below its peak.**" if sanity.get("achieved_le_peak")
                    else "**Sanity FAILED: achieved above peak for " + "; ".join(sanity.get("above_peak", []))
                    + "** (the FLOP count or the peak is wrong).")
    return [verdict_line, "", *_table(["figure", "dtype", "threads", "GFLOP/s", "peak", "fraction", "check"], rows)]


def _recommendations(rows: list[list[Any]]) -> list[str]:
    """Settings at least 10 % faster than their framework's baseline, by this run's measurement."""
    better = [f"{fw}: {name} ({ratio:.2f}×)" for fw, name, *_, ratio in rows
              if isinstance(ratio, float) and ratio >= 1.10]
    worse = [f"{fw}: {name} ({ratio:.2f}×)" for fw, name, *_, ratio in rows
             if isinstance(ratio, float) and ratio <= 0.90]
    return ["**Measured here**: faster than the baseline by ≥ 10 %: " + ("; ".join(better) or "none") + ". Slower "
            "by ≥ 10 %: " + ("; ".join(worse) or "none") + ".", ""]


def _data_wait_section(r: dict[str, Any]) -> list[str]:
    if not r or "error" in r:
        return []
    st = r.get("settings", {})
    gpu, cpu = st.get("gpu_speed", {}), st.get("cpu", {})
    lines = ["## Waiting for data (benchmarks/training_prefetch.py)", "",
             f"Share of a training epoch spent outside the step (waiting for the next batch), `bench.training.loop."
             f"fit` with a grid sampler, without prefetch and with {st.get('prefetch_batches')} batches prefetched; "
             f"median over epochs after the first and over {st.get('rounds')} alternated rounds. GPU-speed step: a "
             f"stand-in that sleeps {_fmt(gpu.get('stand_in_step_s'))} s per batch of {gpu.get('batch_size')} "
             f"{gpu.get('patch')}³ patches ({_fmt(gpu.get('patches_per_s'))} patches/s, no CPU used). CPU step: "
             f"{cpu.get('model')}, batch {cpu.get('batch_size')}, {cpu.get('threads')} thread(s). The sampler alone "
             f"made {_fmt(r.get('sampler_patches_per_s'))} patches/s here (one thread).", ""]
    rows = [[kind, r.get(f"train_data_wait_fraction_{kind}_no_prefetch"),
             r.get(f"train_data_wait_fraction_{kind}_prefetch")] for kind in ("gpu_speed", "cpu")]
    return [*lines, *_table(["step", "wait, no prefetch", "wait, prefetch"], rows)]


def _train_speed_section(r: dict[str, Any]) -> list[str]:
    if not r or "error" in r:
        return []
    lines = ["## bench train-speed (default network settings)", "", f"`{r.get('command')}`, one subprocess each, "
             f"timeout {r.get('timeout_s')} s.", ""]
    rows = [[x["architecture"], x["framework"], x.get("status"), x.get("parameters"), x.get("train_patches_per_s"),
             x.get("infer_patches_per_s"), x.get("wall_s")] for x in r.get("rows", [])]
    return lines + _table(["architecture", "framework", "status", "parameters", "train patches/s",
                           "inference patches/s", "wall s"], rows)
