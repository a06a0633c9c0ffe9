"""Learned alternatives to the rightsizer's rules, scored against the rules in one run.

- Hot-thread detection: a gradient-boosting classifier on per-thread features, trained on
  the training seeds' synthetic traces and tested on other seeds plus the real traces,
  against the fixed hot-thread rule on the same test threads.
- Grouping of unnamed threads: agglomerative clustering on standardised behaviour
  features (the number of clusters chosen by silhouette) against the behaviour-class rule
  and against name-only grouping, scored by adjusted Rand index on the true classes.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.preprocessing import StandardScaler

from bench.rightsizer_traces import Trace
from rightsizer.features import ThreadFeatures, thread_features
from rightsizer.findings import hot_thread_indices
from rightsizer.grouping import assign_groups


def feature_matrix(trace: Trace) -> tuple[np.ndarray, ThreadFeatures]:
    """Return one row of features per thread, container context included."""
    features = thread_features(trace.history)
    demand = trace.history.demand
    container_mean = np.full(len(trace.history.threads), demand.sum(axis=1).mean())
    columns = [
        features.mean_usage,
        features.mean_demand,
        features.hot_fraction,
        features.saturated_fraction,
        features.active_fraction,
        features.wait_share,
        features.hot_wait_share,
        np.log1p(features.slice_ms),
        np.log1p(features.voluntary_rate),
        features.preemption_ratio,
        container_mean,
        np.full(len(trace.history.threads), len(trace.history.threads)),
    ]
    return np.column_stack(columns), features


@dataclass
class Detection:
    """Counts of one detector over a set of threads."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    def add(self, predicted: set[int], truth: set[int]) -> None:
        self.true_positives += len(predicted & truth)
        self.false_positives += len(predicted - truth)
        self.false_negatives += len(truth - predicted)

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def compare_hot_detection(train: list[Trace], test: list[Trace]) -> dict[str, Detection]:
    """Train the classifier on ``train``; score it and the rule on ``test``."""
    rows: list[np.ndarray] = []
    labels: list[bool] = []
    for trace in train:
        matrix, _ = feature_matrix(trace)
        rows.append(matrix)
        labels.extend(trace.labels[t.tid] == "hot" for t in trace.history.threads)
    model = GradientBoostingClassifier(random_state=0)
    model.fit(np.vstack(rows), np.array(labels))
    results = {"rule": Detection(), "classifier": Detection()}
    for trace in test:
        matrix, features = feature_matrix(trace)
        tids = [t.tid for t in trace.history.threads]
        truth = trace.tids("hot")
        results["rule"].add({tids[i] for i in hot_thread_indices(features)}, truth)
        predicted = model.predict(matrix)
        results["classifier"].add(
            {tid for tid, hot in zip(tids, predicted, strict=True) if hot}, truth
        )
    return results


def cluster_groups(trace: Trace, max_clusters: int = 5, min_silhouette: float = 0.5) -> list[str]:
    """Split the threads into behaviour clusters; one group if no split is clear."""
    matrix, _ = feature_matrix(trace)
    scaled = StandardScaler().fit_transform(matrix[:, :10])
    best, best_score = np.zeros(len(scaled), dtype=int), min_silhouette
    for clusters in range(2, min(max_clusters, len(scaled) - 1) + 1):
        labels = AgglomerativeClustering(n_clusters=clusters).fit_predict(scaled)
        score = silhouette_score(scaled, labels)
        if score > best_score:
            best, best_score = labels, score
    return [f"cluster-{label}" for label in best]


def compare_grouping(traces: list[Trace]) -> dict[str, float]:
    """Return the mean adjusted Rand index of each grouping on unnamed-thread traces."""
    scores: dict[str, list[float]] = {"name only": [], "behaviour rule": [], "clustering": []}
    for trace in traces:
        truth = [trace.labels[t.tid] for t in trace.history.threads]
        _, features = feature_matrix(trace)
        scores["name only"].append(
            adjusted_rand_score(truth, [t.group for t in trace.history.threads])
        )
        scores["behaviour rule"].append(
            adjusted_rand_score(truth, assign_groups(trace.history, features))
        )
        scores["clustering"].append(adjusted_rand_score(truth, cluster_groups(trace)))
    return {name: float(np.mean(values)) for name, values in scores.items()}
