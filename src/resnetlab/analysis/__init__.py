"""Looking inside networks: summaries, MACs, gradient flow."""

from .summary import LayerRow, Summary, count_macs, format_summary, model_info, summarize

__all__ = ["LayerRow", "Summary", "count_macs", "format_summary", "model_info", "summarize"]
