"""The remedies' costs side by side: priming with k OOD pairs (k = 0 is the control), the targeted fine-tune,
the rule wrapper, and retraining from scratch on mixed-length data, all from one run (default: the shipped
3-digit adder, add3_nano). Each remedy writes its run under OUT; the last step writes OUT/costs.csv
(``remedies.remedy_table``) and OUT/scorecards.csv (``scorecard.scorecard_table``).

    python benchmarks/remedy_costs.py --out DIR [--run add3_nano] [--only prime,finetune,wrap,retrain] [--k 0 10 50 ...] [--seed S]

``--seed`` draws other OOD pairs (and scores on other pairs); its runs are named ``..._seedS``.

Wall times are this machine's, one torch thread per process; compare them within one table only.
Runs already in OUT are kept and only the tables are rebuilt from them.
"""
import argparse
import json
from pathlib import Path

from equiv_tools.analysis import remedies
from equiv_tools.analysis.scorecard import scorecard_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--run", default="add3_nano")
    parser.add_argument("--only", default="prime,finetune,wrap,retrain")
    parser.add_argument("--k", type=int, nargs="+", default=[0, 10, 20, 50, 100, 200, 1000, 5000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"_seed{args.seed}" if args.seed else ""
    jobs = {"prime": [(f"prime_k{k}", remedies.prime, {"k": k}) for k in args.k], "finetune": [("finetune", remedies.finetune, {})],
            "wrap": [("wrap", remedies.wrap, {})], "retrain": [("retrain", remedies.retrain, {})]}
    for name in args.only.split(","):
        for folder, remedy, options in jobs[name]:
            folder += suffix
            if not (args.out / folder).exists():
                result = remedy(args.run, args.out / folder, seed=args.seed, **options)
                print(folder, json.dumps(result.cost), f"ID {result.scorecard['id_accuracy']:.4f} OOD {result.scorecard['ood_accuracy']:.4f}", flush=True)
    done = sorted(p.parent for p in args.out.glob("*/remedy.json"))
    table = remedies.remedy_table(done)
    table.to_csv(args.out / "costs.csv", index=False)
    records = [json.loads((p / "remedy.json").read_text()) for p in done]
    cards = [r["scorecard"] for r in records]
    source = next(r["source_scorecard"] for r in records if r["options"]["seed"] == 0)
    scorecard_table([source, *cards]).to_csv(args.out / "scorecards.csv", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
