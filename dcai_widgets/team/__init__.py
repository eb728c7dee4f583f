"""Team labeling (engine side, no widget imports): a queue shared through the store's claims, and the
team's agreement, consensus and annotator quality."""
from .agreement import (TeamReport, annotator_activity, fleiss_by_group, krippendorff_alpha, label_matrix,
                        pairwise_kappa, team_report)
from .shared_queue import SharedQueue, overlap_rule, unit_hash
from .team_fit import TeamFit

__all__ = ["SharedQueue", "TeamFit", "TeamReport", "annotator_activity", "fleiss_by_group", "krippendorff_alpha", "label_matrix",
           "overlap_rule", "pairwise_kappa", "team_report", "unit_hash"]
