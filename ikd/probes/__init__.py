"""Probes and analyses of the paper's section 5: source degradation (Table 6), image retrieval (Table 4),
attention maps (Figure 4), imagined images and learning curves."""
