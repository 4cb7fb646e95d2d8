"""Paper reproductions: degradation (plain vs residual, Figure 6) and gradient flow / responses (Figure 7)."""

from .degradation import DegradationResult, run_degradation
from .gradients import GradientsResult, run_gradients
from .measure import conv_grad_norms, response_stds

__all__ = ["DegradationResult", "GradientsResult", "conv_grad_norms", "response_stds", "run_degradation",
           "run_gradients"]
