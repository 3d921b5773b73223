# %% [markdown]
# # Dodge et al. 2020 on one seed grid
#
# Weight initialisation (WI) and data order (DO): how much each moves the result, the best run
# to expect from n of them, and which runs to stop early — the paper's Tables 1, 3, 4 and
# Figs. 1, 3, 5–7, for one cube. Open it as a notebook (`jupytext --to notebook
# analysis/dodge2020.py`, or Jupyter with jupytext) or run it:
# `SEEDGRID_CUBE=runs/demo python analysis/dodge2020.py`. Each number is one call of the
# cube's accessor, `ds.seedgrid` (the same `seedgrid report` makes for many runs at once).

# %%
import os

import matplotlib.pyplot as plt

import seedgrid
from seedgrid import early_stopping

ds = seedgrid.open_cube(os.environ.get("SEEDGRID_CUBE", "runs/demo"))
acc = ds.seedgrid
metric = ds.attrs["metric"]
print(f"{ds.attrs['task']}, {ds.attrs['model']}: {ds.sizes['seed_wi']} WI x "
      f"{ds.sizes['seed_do']} DO seeds, {ds.sizes['example']} validation examples, {metric}")

# %% [markdown]
# ## Table 1: the best run found, by how often the validation set is evaluated

# %%
best_found = acc.regimes().max(["seed_wi", "seed_do"])
print(best_found.to_pandas().to_string(float_format=lambda x: f"{x:.4f}"))

# %% [markdown]
# ## Fig. 1: the expected best of n runs (mean and spread over draws of n runs)

# %%
curves = acc.expected_max()
for regime in curves["regime"].values:
    curve = curves.sel(regime=regime)
    plt.plot(curve["n"], curve["mean"], label=str(regime))
    plt.fill_between(curve["n"], curve["lower"], curve["upper"], alpha=0.2)
plt.xlabel("runs trained (n)")
plt.ylabel(f"expected best {metric}")
plt.legend(title="evaluated")
plt.show()

# %% [markdown]
# ## Fig. 3 and Table 3: the spread of the final metric, and the std with one seed fixed

# %%
final = acc.final()
print(final.to_pandas().to_string(float_format=lambda x: f"{x:.4f}"))
print({kind: round(std, 4) for kind, std in acc.decoupled_std().items()})

# %% [markdown]
# ## Table 4: is some seed better? ANOVA of the best vs the worst seed, and a permutation test

# %%
anova, permutation = acc.anova(), acc.permutation_test()
for kind in ("seed_wi", "seed_do"):
    print(f"{kind}: ANOVA p {anova[kind]['p']:.3g}, permutation p {permutation[kind]['p']:.3g}")

# %% [markdown]
# ## Figs. 5-7: start many runs, stop the worst early, continue the best

# %%
table = acc.early_stopping(samples=2_000)  # every (started, stop at, continued): simulated
best = early_stopping.best_per_budget(table)  # the best of them for each budget of full runs
print(best.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
