"""Collect `rtgaze-fast eval --json` outputs into one committed results file (summaries only: the
per-pair rows stay in the eval JSONs under out/).

    python benchmarks/summarize_eval.py OUT.json --what "..." NAME=EVAL.json[@COMMAND] ...
"""
import argparse
import json
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--what", required=True)
    p.add_argument("runs", nargs="+", help="NAME=EVAL.json@COMMAND")
    args = p.parse_args()
    table = {"what": args.what, "date": time.strftime("%Y-%m-%d"), "runs": {}}
    for spec in args.runs:
        name, rest = spec.split("=", 1)
        path, _, command = rest.partition("@")
        with open(path) as f:
            r = json.load(f)
        table["runs"][name] = {
            "command": command, "weights": r.get("weights"), "split": r.get("split"), "seed": r.get("seed"),
            "variety": r.get("variety"), "pairs": r["n"], "resolution": r.get("resolution"), "ray_res": r["ray_res"],
            **{k: r[k] for k in ("model", "identity", "oracle") if k in r},
            "seconds_per_image": r["seconds_per_image"], "environment": r.get("environment")}
    with open(args.out, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
