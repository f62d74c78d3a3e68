"""The protection benchmark: protect a labelled training set with each method, train
fresh victims on the written files under each defence, and test them on clean images.

protect.bench.data loads folders, protect.bench.cache keys results by their
inputs, protect.bench.harness runs the plan, and protect.bench.report writes
the table and chart.
"""
