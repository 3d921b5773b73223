# %% [markdown]
# # Bui et al. 2025 on one seed grid
#
# The macro effect of the seeds (mean and variance of accuracy and F1 over runs) and the micro
# effect (do the runs predict the same label for each example? CON, CCON, agreement), the pair
# of runs with equal accuracy that agree least (Fig. 1), and the training dynamics — for one
# cube. Across training sizes and model families (Figs. 2–4) give the runs together to
# `python -m seedgrid.papers.bui2025 RUN...`. Open it as a notebook (`jupytext --to notebook
# analysis/bui2025.py`) or run it: `SEEDGRID_CUBE=runs/demo python analysis/bui2025.py`.

# %%
import os

import matplotlib.pyplot as plt

import seedgrid
from seedgrid import analysis

ds = seedgrid.open_cube(os.environ.get("SEEDGRID_CUBE", "runs/demo"))
acc = ds.seedgrid
print(f"{ds.attrs['task']}, {ds.attrs['model']}: {ds.sizes['seed_wi']} x "
      f"{ds.sizes['seed_do']} runs, {ds.sizes['example']} validation examples")

# %% [markdown]
# ## Macro: accuracy and F1 at the last evaluation, mean and variance (VAR) over runs

# %%
f1 = "f1" if ds.sizes["class"] == 2 else "macro_f1"  # macro-F1 beyond two labels
for name in ("accuracy", f1):
    s = analysis.summary(acc.final(name))
    print(f"{name}: mean {s['mean']:.4f}, VAR {s['var']:.6f} over {s['n']} runs")

# %% [markdown]
# ## Micro: CON (all runs agree), CCON (all runs right), mean agreement of two runs

# %%
grid = acc.consistency()
print({k: round(float(grid[k]), 4) for k in ("con", "ccon", "agreement")})
within_wi = acc.consistency(over="seed_do")  # runs of one WI seed (its DO seeds vary)
print(within_wi[["con", "ccon", "agreement"]].reset_coords(drop=True).to_dataframe().round(4)
      .to_string())

# %% [markdown]
# ## Fig. 1: runs of (nearly) equal accuracy that disagree most, and every pair's agreement

# %%
print(acc.run_pairs(tolerance=0.01, top=3).to_string(index=False))
agreement = analysis.agreement_matrix(acc.predictions(step=-1))
plt.imshow(agreement.values, vmin=0, vmax=1, cmap="viridis")
plt.colorbar(label="fraction of examples predicted alike")
plt.title("agreement between every two runs")
plt.show()

# %% [markdown]
# ## Training dynamics: does an early evaluation rank the runs as the last one does?

# %%
spearman = acc.step_correlation()
print(spearman.to_pandas().round(3).to_string())
