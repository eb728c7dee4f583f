"""Past one machine (issue 18): the heavy steps -- embedding, kNN graph/table, MetaStore gradient
collection -- run in this process (default) or on Ray, with the same API and the same results.

>>> enc = CallableEncoder(model, executor="ray")            # Session(..., encoder=enc)
>>> index.knn_graph(15, executor="ray://head:10001")
>>> ms.collect((X, y), nn.CrossEntropyLoss(), "epoch-3", executor="ray")

Ray is imported only when a Ray executor is used (``pip install 'ray[data]'``).
"""
from .embed import RangeFeed, embed_rows, encode_items
from .executor import Executor, LocalExecutor, RayExecutor, Shared, get_executor, is_local
from .rows import MappedRows

__all__ = ["Executor", "LocalExecutor", "MappedRows", "RangeFeed", "RayExecutor", "Shared", "embed_rows", "encode_items",
           "get_executor", "is_local"]
