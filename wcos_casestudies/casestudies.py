# %% [markdown]
# # Section 6 and Appendix E: functional roles, IO classes and case studies
#
# Run cell by cell in VS Code (or Jupyter), or top to bottom:
# `python casestudies.py [--model MODEL] [--n_partition N] ...` (`--help` lists the flags).
# Needs the cosines of `main.py` (computes them when missing). Results go to the model's
# results folder: `roles.pt`, `entropy_scores.csv/.md/.pdf/.png`, `contingency.csv/.md`,
# `case_studies.csv/.txt`, `tokens/`.

# %% Set-up: flags (defaults inside a notebook kernel)
from gated_core.cli import (
    add_device,
    add_model,
    add_naming,
    add_results_dir,
    in_notebook,
    install_user_error_hook,
    make_parser,
    positive_float,
    positive_int,
)
from gated_core.constants import ARTIFACT_FORMATS
from gated_core.naming import shown, use_naming
from wcos_casestudies.cli import add_weight_settings
from wcos_casestudies.constants import DEFAULT_N_ENTROPY, DEFAULT_TOP_TOKENS


def build_parser():
    parser = make_parser("Section 6 / Appendix E: roles, contingency table, case studies.")
    add_model(parser)
    roles = parser.add_argument_group("roles")
    roles.add_argument("--n_partition", type=positive_int, default=None,
                       help="partition neurons (default: the paper's 1000, at most 5%% of the model's neurons)")
    roles.add_argument("--n_entropy", type=positive_int, default=DEFAULT_N_ENTROPY,
                       help="entropy neurons (top scores of the last layer; every score goes to entropy_scores.csv and its box plot)")
    roles.add_argument("--null_space_dim", type=positive_int, default=None,
                       help="k smallest singular directions of W_U (default: 40·d_model/4096)")
    roles.add_argument("--min_kurtosis", type=positive_float, default=None,
                       help="floor of the excess-kurtosis threshold of prediction/suppression neurons, as Gurnee et al. "
                            "used (default: none, the paper's rule: the largest excess kurtosis among partition neurons)")
    roles.add_argument("--top_k", type=positive_int, default=DEFAULT_TOP_TOKENS, help="tokens per column of the token tables")
    roles.add_argument("--skip_attention", action="store_true",
                       help="leave out attention (de)activation neurons (they need the whole model in memory)")
    add_weight_settings(parser)
    add_device(parser, "where the statistics are computed")
    parser.add_argument("--format", choices=ARTIFACT_FORMATS, default="pt", help="artifact format (pickle: the seed's format)")
    add_results_dir(parser)
    parser.add_argument("--overwrite", action="store_true", help="recompute the role statistics")
    add_naming(parser)
    return parser


if not in_notebook():
    install_user_error_hook()
args = build_parser().parse_args([] if in_notebook() else None)
use_naming(args.naming)  # the classes as --naming names them, for the rest of the run (or of the notebook's session)

# %% Imports, model and results folder
import pandas as pd
import torch

from gated_core.cli import check_output_location, parse_device
from gated_core.models.sources import resolve_model
from gated_core.neurons import NeuronId
from wcos_casestudies import roles as R
from wcos_casestudies import section6
from wcos_casestudies.cli import settings_from_args
from wcos_casestudies.constants import ATTENTION_COSINE, CLASS_NAMES, PAPER_N_PARTITION
from wcos_casestudies.results import ModelResults

settings = settings_from_args(args)
check_output_location(args.results_dir, "--results_dir")
source = resolve_model(args.model, full_hash=args.full_hash)
options = section6.RoleOptions(n_partition=args.n_partition, n_entropy=args.n_entropy,
                               null_space_dim=args.null_space_dim, attention=not args.skip_attention,
                               min_kurtosis=args.min_kurtosis)
section6.check_inputs(source, options)
results = ModelResults(source, settings, root=args.results_dir, fmt=args.format, loader=args.loader,
                       device=parse_device(args.device))
check_output_location(results.folder, "--results_dir", inside=args.results_dir)
print(f"model {source.name} [{source.provenance}]\nresults in {results.folder}")

# %% Cosines and IO classes (from main.py's artifact, computed if missing)
cosines = results.cosines()
categories = results.categories()
n_layers, n_neurons = categories.shape
print(f"{n_layers} layers x {n_neurons} neurons")

# %% Per-neuron statistics of cos(w_out, W_U) over the vocabulary, and the functional roles
role_results = section6.compute_roles(results, options, overwrite=args.overwrite)
info = role_results.info
print(f"unembedding moments over {info['vocab']} tokens (computed in {info['moments_seconds']} s)")
print(f"partition neurons: {info['n_partition']}"
      + ("" if args.n_partition or info['n_partition'] == PAPER_N_PARTITION else f" (the paper's 1000 capped at 5% of this model's {n_layers * n_neurons} neurons)"))
print(f"prediction/suppression: excess kurtosis above {info['kurtosis_threshold']:.2f} "
      + ("(largest among partition neurons)" if info["kurtosis_threshold"] == info["kurtosis_rule"]
         else f"(--min_kurtosis; the largest among partition neurons is {info['kurtosis_rule']:.2f})"))
if info["kurtosis_warning"]:
    print(info["kurtosis_warning"])
for role, mask in role_results.roles.items():
    print(f"  {role:24s} {int(mask.sum()):6d}")
top_entropy = torch.topk(role_results.entropy_scores, min(10, n_neurons))
print(f"entropy scores, last layer (null space of W_U: {info['null_space_dim']} directions), top 10:")
print("  " + ", ".join(f"{NeuronId(n_layers - 1, int(i))}: {float(v):.3f}" for v, i in zip(top_entropy.values, top_entropy.indices)))
print(f"  median over the layer {float(role_results.entropy_scores.median()):.3f}")
entropy_files = section6.write_entropy_scores(role_results, results)
print(f"-> {results.folder / 'entropy_scores.csv'} (.md; every neuron of the last layer), box plot {entropy_files[0].name} (.png)")
if role_results.attention_max is not None:
    strongest = role_results.attention_max[:-1]
    peak = NeuronId.from_flat(strongest.argmax(), n_neurons)
    print(f"attention (de)activation: largest |cos(w_out, BOS query direction of a next-layer head)| is "
          f"{float(strongest.max()):.3f} ({peak}); the role needs > {ATTENTION_COSINE:.3f}")

# %% Appendix E: contingency table of roles x IO classes
table = section6.write_contingency(role_results, categories, results)
with pd.option_context("display.width", 250, "display.max_columns", 20):
    print(shown(str(table.set_index("role").rename(columns=lambda c: c.replace("conditional", "cond.").replace("atypical", "atyp.")))))
print(f"-> {results.folder / 'contingency.csv'} (.md)")

# %% Section 6: the case-study neurons
chosen = R.case_study_neurons(role_results.roles["prediction"], role_results.roles["suppression"],
                              role_results.moments["kurtosis"], categories)
neuron_file = section6.write_case_studies(chosen, results.folder)
for case in chosen:
    print(f"  {case.name:>10s}  {shown(case.io_class):32s} kurtosis {case.kurtosis:8.1f}  {shown(case.reason)}")
missing = {CLASS_NAMES[code] for code in R.TYPICAL_CLASSES} - {case.io_class for case in chosen}
if missing:
    print(f"  no prediction neuron in: {shown(', '.join(sorted(missing)))}")
print(f"-> {neuron_file} (feed to neuroscope/d_recompute_vis.py --neurons $(cat {neuron_file.name}))")

# %% Weight-based analysis of each case-study neuron: cosines, class, top tokens of ±w_out, ±w_in, ±w_gate
tables = section6.write_token_tables(results, chosen, args.top_k)
for case in chosen:
    summary = section6.neuron_summary(results, case.layer, case.neuron)
    print(f"\n{summary['neuron']}: {shown(summary['class'])}; gatelin {summary['gatelin']:+.3f}, "
          f"gateout {summary['gateout']:+.3f}, linout {summary['linout']:+.3f}")
    with pd.option_context("display.width", 250, "display.max_columns", 10):
        print(tables[case.name].head(8).to_string(index=False))
print(f"\n-> {results.folder / 'tokens'}/<layer>.<neuron>.csv (.md), {args.top_k} tokens each")

# %% One page that links every output of this model
print(f"all outputs: {results.write_index()}")
