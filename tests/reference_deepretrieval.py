"""The reference implementation's prompts and reward rules, copied as the independent reference
for tests/test_tasks_fidelity.py (never imported by the product).

Source: github.com/pat-jj/DeepRetrieval at commit 001a563d76d6cde9b831443a077fb90d2b084d45
(main, 2025-05-29). Prompts: each `make_prefix` of code/data_preprocess/ applied to the input
"<<INPUT>>" (SQL: schema "<<SCHEMA>>", BIRD knowledge "<<KNOWLEDGE>>"), the exact strings it
returns; file and lines above each. Reward code: the reference's functions, copied with only
their I/O removed (no search engine, no printing), file and lines above each.
"""
import numpy as np

REFERENCE_COMMIT = "001a563d76d6cde9b831443a077fb90d2b084d45"
INPUT, SCHEMA, KNOWLEDGE = "<<INPUT>>", "<<SCHEMA>>", "<<KNOWLEDGE>>"

REFERENCE_PROMPTS = {
    # scifact.py:16-38
    'scifact': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first thinks about the reasoning process in the mind and then provides the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are a query generating expert. Given a scientific claim, your task is to create query terms to retrieve documents that support or refute the claim.\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        'Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately.\n'
        '\n'
        "Here's the scientific claim:\n"
        '<<INPUT>>\n'
        'Assistant: Let me think step by step. \n'
        '<think>\n'),
    # nfcorpus.py:16-38
    'nfcorpus': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first think about the reasoning process in the mind and then provide the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are an expert in query generation. Given a question, your task is to create query terms to retrieve relevant documents that best answer the question.\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        'Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately.\n'
        '\n'
        "Here's the question:\n"
        '<<INPUT>>\n'
        'Assistant: Let me think step by step. \n'
        '<think>\n'),
    # fever.py:15-37
    'fever': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first think about the reasoning process in the mind and then provide the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are an expert in query generation. Given a claim, your task is to create query terms to retrieve documents that support or refute the claim.\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        'Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately.\n'
        '\n'
        "Here's the claim:\n"
        '<<INPUT>>\n'
        'Assistant: Let me think step by step. \n'
        '<think>\n'),
    # hotpotqa.py:16-38
    'hotpotqa': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first think about the reasoning process in the mind and then provide the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are an expert in query generation. Given a multi-hop question, your task is to create query terms to retrieve documents that can help answer the question.\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        'Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately.\n'
        '\n'
        "Here's the question:\n"
        '<<INPUT>>\n'
        'Assistant: Let me think step by step. \n'
        '<think>\n'),
    # msmarco_beir.py:14-36
    'msmarco_beir': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first think about the reasoning process in the mind and then provide the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are an expert in query generation. Given a web search query, your task is to create query terms to retrieve relevant passages that answer the query.\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        'Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately.\n'
        '\n'
        "Here's the claim:\n"
        '<<INPUT>>\n'
        'Assistant: Let me think step by step. \n'
        '<think>\n'),
    # dense/scifact.py:16-37
    'scifact_dense': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first thinks about the reasoning process in the mind and then provides the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are an expert in generating queries for dense retrieval. Given a scientific claim, your task is to retain the original query while expanding it with additional semantically relevant information. If no useful expansion is needed, return the original query as is.\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        '\n'
        "Here's the scientific claim:\n"
        '<<INPUT>>\n'
        'Assistant: Let me think step by step. \n'
        '<think>\n'),
    # dense/nfcorpus.py:16-37
    'nfcorpus_dense': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first think about the reasoning process in the mind and then provide the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are an expert in generating queries for dense retrieval. Given a question, your task is to retain the original query while expanding it with additional semantically relevant information, to retrieve relevant documents that best answer the question. If no useful expansion is needed, return the original query as is.\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        '\n'
        "Here's the question:\n"
        '<<INPUT>>\n'
        'Assistant: Let me think step by step. \n'
        '<think>\n'),
    # dense/fever.py:16-37
    'fever_dense': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first think about the reasoning process in the mind and then provide the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are an expert in generating queries for dense retrieval. Given a claim, your task is to retain the original query while expanding it with additional semantically relevant information, to retrieve documents that support or refute the claim. If no useful expansion is needed, return the original query as is.\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        '\n'
        "Here's the claim:\n"
        '<<INPUT>>\n'
        'Assistant: Let me think step by step. \n'
        '<think>\n'),
    # dense/hotpotqa.py:16-37
    'hotpotqa_dense': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first think about the reasoning process in the mind and then provide the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are an expert in generating queries for dense retrieval. Given a multi-hop question, your task is to retain the original query while expanding it with additional semantically relevant information, to retrieve documents that can help answer the question. If no useful expansion is needed, return the original query as is.\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        '\n'
        "Here's the question:\n"
        '<<INPUT>>\n'
        'Assistant: Let me think step by step. \n'
        '<think>\n'),
    # dense/msmarco_beir.py:14-36
    'msmarco_beir_dense': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first think about the reasoning process in the mind and then provide the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are an expert in generating queries for dense retrieval. Given a web search query, your task is to retain the original query while expanding it with additional semantically relevant information, to retrieve relevant passages that answer the query. If no useful expansion is needed, return the original query as is.\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        '\n'
        "Here's the web search query:\n"
        '<<INPUT>>\n'
        '<|im_end|>\n'
        '<|im_start|>assistant: Let me think step by step. \n'
        '<think>\n'),
    # nq_serini.py:16-43
    'evidence': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first thinks about the reasoning process in the mind and then provides the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are a query rewriting expert. Your task is to create query terms for user query to find relevant literature in a Wikipedia corpus using BM25.\n'
        '\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<think>\n'
        '[thinking process]\n'
        '</think>\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        'Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately.\n'
        '\n'
        "Here's the user query:\n"
        '<<INPUT>>\n'
        'Assistant: Let me rewrite the query with reasoning. \n'
        '<think>\n'),
    # triviaqa.py:15-42 (squad.py:16-43 is the same text)
    'evidence_tqa_squad': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first thinks about the reasoning process in the mind and then provides the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are a query rewriting expert. Your task is to create query terms for user query to find relevant literature in a massive corpus.\n'
        '\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<think>\n'
        '[thinking process]\n'
        '</think>\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        "Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately. You don't need to rewrite the query when the query is already good.\n"
        '\n'
        "Here's the user query:\n"
        '<<INPUT>>\n'
        'Assistant: Let me rewrite the query with reasoning. \n'
        '<think>\n'),
    # msmarco_sub.py:16-62, retrieval_mode='sparse'
    'msmarco_sparse': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first thinks about the reasoning process in the mind and then provides the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are a query rewriting expert. Your task is to augment the user query to find relevant literature in a corpus with sparse retrieval.\n'
        '\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<think>\n'
        '[thinking process]\n'
        '</think>\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        'Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately."\n'
        '\n'
        "Here's the user query:\n"
        '<<INPUT>><|im_end|>\n'
        '<|im_start|>assistant\n'
        '\n'
        'Let me rewrite the query with reasoning. \n'
        '<think>\n'),
    # msmarco_sub.py:16-62, retrieval_mode='dense'
    'msmarco_dense': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first thinks about the reasoning process in the mind and then provides the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are a query rewriting expert. Your task is to augment the user query to find relevant literature in a corpus with dense retrieval.\n'
        '\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer> tags. For example,\n'
        '<think>\n'
        '[thinking process]\n'
        '</think>\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        'Note: Given a question, your need to retain the original query while expanding it with additional semantically relevant information, to retrieve documents that can help answer the question. If no useful expansion is needed, return the original query as is.\n'
        '\n'
        "Here's the user query:\n"
        '<<INPUT>><|im_end|>\n'
        '<|im_start|>assistant\n'
        '\n'
        'Let me rewrite the query with reasoning. \n'
        '<think>\n'),
    # pubmed.py:16-25 + 53-77
    'literature': (
        '<|im_start|>system\n'
        'A conversation between User and Assistant. The User asks a question, and the Assistant solves it. The Assistant first thinks about the reasoning process in the mind and then provides the User with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'The Assistant is a clinical specialist. He is conducting research and doing a medical literature review. His task is to create query terms for a search URL to find relevant literature on PubMed or ClinicalTrials.gov.\n'
        '\n'
        'The research is defined using the PICO framework:\n'
        'P: Patient, Problem or Population - Who or what is the research about?\n'
        'I: Intervention - What is the main intervention or exposure being considered?\n'
        'C: Comparison - What is the intervention being compared to?\n'
        'O: Outcome - What are the relevant outcomes or effects being measured?\n'
        '\n'
        'The Assistant should show his thinking process in <think> </think> tags. The Assistant should return the final answer in JSON format in <answer> </answer> tags, \n'
        'For example:\n'
        '<think>\n'
        '[thinking process]\n'
        '</think>\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        'Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately.\n'
        '\n'
        'User: The research is defined by the following PICO:\n'
        '<<INPUT>><|im_end|>\n'
        '<|im_start|>assistant\n'
        '\n'
        'Assistant: Let me solve this step by step. \n'
        '<think>\n'),
    # ctgov.py:16-51
    'ctgov': (
        'A conversation between User and Assistant. The User asks a question, and the Assistant solves it. The Assistant first thinks about the reasoning process in the mind and then provides the User with the answer.\n'
        '\n'
        'The Assistant is a clinical specialist. He is conducting research and doing a medical literature review. His task is to create query terms for a search URL to find relevant literature on PubMed or ClinicalTrials.gov.\n'
        '\n'
        'The research is defined using the PICO framework:\n'
        'P: Patient, Problem or Population - Who or what is the research about?\n'
        'I: Intervention - What is the main intervention or exposure being considered?\n'
        'C: Comparison - What is the intervention being compared to?\n'
        'O: Outcome - What are the relevant outcomes or effects being measured?\n'
        '\n'
        'The Assistant should show his thinking process in <think> </think> tags. The Assistant should return the final answer in JSON format in <answer> </answer> tags, \n'
        'For example:\n'
        '<think>\n'
        '[thinking process]\n'
        '</think>\n'
        '<answer>\n'
        '{\n'
        '    "query": "...."\n'
        '} \n'
        '</answer>. \n'
        'Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately.\n'
        '\n'
        'User: The research is defined by the following PICO:\n'
        '<<INPUT>>\n'
        'Assistant: Let me solve this step by step. \n'
        '<think>\n'),
    # spider.py:18-20 + 48-87 (schema from generate_schema_prompt)
    'sql_spider': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first think about the reasoning process in the mind and then provides the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are a SQL query writing expert. Your task is to write the SQL query for the user query to retrieve data from a database.\n'
        'Database Schema:\n'
        '<<SCHEMA>>\n'
        'Note: Using valid SQLite and understanding External Knowledge, answer the following questions for the tables provided above.\n'
        '\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer>. For example,\n'
        '<think>\n'
        '[thinking process]\n'
        '</think>\n'
        '<answer>\n'
        '{\n'
        '    "sql": "SELECT ... (in one line)"\n'
        '} \n'
        '</answer>. \n'
        '\n'
        "Here's the user query:\n"
        '<<INPUT>><|im_end|>\n'
        '<|im_start|>assistant\n'
        'Let me write the SQL query with reasoning. \n'
        '<think>\n'),
    # bird.py:19-21 + 86-138 (schema from generate_schema_prompt)
    'sql_bird': (
        '<|im_start|>system\n'
        'You are a helpful assistant. You first think about the reasoning process in the mind and then provides the user with the answer.<|im_end|>\n'
        '<|im_start|>user\n'
        '\n'
        'You are a SQL query writing expert. Your task is to write the SQL query for the user query to retrieve data from a database.\n'
        'Database Schema:\n'
        '<<SCHEMA>>\n'
        'External Knowledge: <<KNOWLEDGE>>\n'
        'Note: Using valid SQLite and understanding External Knowledge, answer the following questions for the tables provided above.\n'
        '\n'
        'Show your work in <think> </think> tags. Your final response must be in JSON format within <answer> </answer>. For example,\n'
        '<think>\n'
        '[thinking process]\n'
        '</think>\n'
        '<answer>\n'
        '{\n'
        '    "sql": "SELECT ... (in one line)"\n'
        '} \n'
        '</answer>. \n'
        '\n'
        "Here's the user query:\n"
        '<<INPUT>><|im_end|>\n'
        '<|im_start|>assistant\n'
        'Let me write the SQL query with reasoning. \n'
        '<think>\n'),
}


# ---- code/src/Lucene/utils.py:9-33 (used by every classic-IR reward and evaluation) ----------
def dcg_at_k(retrieved, target, k, rel_scores=None):
    retrieved = retrieved[:k]
    if rel_scores is None:
        gains = np.array(retrieved) == target
    else:
        assert len(target) == len(rel_scores)
        rel_scores_dict = {item: rel_scores[i] for i, item in enumerate(target)}
        gains = np.array([rel_scores_dict.get(doc, 0) for doc in retrieved])
    discounts = np.log2(np.arange(2, len(gains) + 2))
    return np.sum(gains / discounts)


def ndcg_at_k(retrieved, target, k, rel_scores=None):
    dcg = dcg_at_k(retrieved, target, k, rel_scores)
    if isinstance(target, list):
        ideal_dcg = dcg_at_k(target, target, k, rel_scores)
    else:
        ideal_dcg = dcg_at_k([target], target, k, rel_scores)  # Ideal DCG: only the target at top
    return dcg / ideal_dcg if ideal_dcg > 0 else 0.0


# ---- code/verl/utils/reward_score/scifact.py:159, 175-184 (and every classic-IR / SQL file) --
def ir_total(format_correct, answer_score, format_reward=0.1):
    format_score = format_reward if format_correct else -2
    if answer_score > 0:
        return format_score + answer_score
    return 0 if format_score > 0 else format_score


# Training depth `top_k` of compute_score (train split; val/test use 10 everywhere):
TRAIN_TOP_K = {
    "scifact_bm25": 50,          # reward_score/scifact.py:173
    "nfcorpus_bm25": 1000,       # reward_score/nfcorpus.py:176
    "fever_bm25": 1000,          # reward_score/fever.py:175
    "hotpotqa_bm25": 3000,       # reward_score/hotpotqa.py:175
    "msmarco_beir_bm25": 1000,   # reward_score/msmarco_beir.py:175
    "scifact_dense": 1000,       # reward_score_dense/scifact.py:180
    "nfcorpus_dense": 100,       # reward_score_dense/nfcorpus.py:179
    "fever_dense": 1000,         # reward_score_dense/fever.py:179
    "hotpotqa_dense": 1000,      # reward_score_dense/hotpotqa.py:179
    "msmarco_beir_dense": 1000,  # reward_score_dense/msmarco_beir.py:179
    **{f"msmarco_{d}_{m}": 10 for d in ("health", "science", "tech") for m in ("bm25", "dense")},  # msmarco.py:235
}


# ---- code/verl/utils/reward_score/nq_serini.py:149-178, 205, 216 (triviaqa.py identical) ------
def evidence_answer_score(rank, miss=-3.5):
    """`rank` = 1-based rank of the first answer-bearing passage in the top 3000, or 3001."""
    if rank <= 5:
        answer_score = 5
    elif rank <= 20:
        answer_score = 4
    elif rank <= 50:
        answer_score = 2
    elif rank <= 100:
        answer_score = 1
    elif rank <= 1000:
        answer_score = 0.5
    elif rank <= 3000:
        answer_score = 0.1
    else:
        answer_score = miss              # squad.py:174: -2.5
    return answer_score


EVIDENCE_ERROR = {"nq": -4, "triviaqa": -4, "squad": -3}      # nq_serini.py:178, squad.py:178
EVIDENCE_MISS = {"nq": -3.5, "triviaqa": -3.5, "squad": -2.5}  # nq_serini.py:174, squad.py:174
SEARCH_FORMAT = (1, -4)     # nq_serini.py:205, pubmed.py:208, ctgov.py:192: format right / wrong


# ---- code/verl/utils/reward_score/pubmed.py:165-182 (ctgov.py:149-166 identical) -------------
def literature_answer_score(recall):
    if recall >= 0.7:
        answer_score = 5
    elif recall >= 0.5:
        answer_score = 4
    elif recall >= 0.4:
        answer_score = 3
    elif recall >= 0.3:
        answer_score = 1
    elif recall >= 0.1:
        answer_score = 0.5
    elif recall >= 0.05:
        answer_score = 0.1
    else:
        answer_score = -3.5
    return answer_score


LITERATURE_ERROR = -4       # pubmed.py:182


# ---- code/verl/utils/reward_score/spider.py:133-148 and bird.py:133-152 ----------------------
def sql_answer_score(pred_results, gold_results, dataset):
    """`pred_results` None = the prediction raised an SQL error."""
    if pred_results is None:
        return 0
    if dataset == "bird":
        return 1 if set(pred_results) == set(gold_results) else 0.3
    return 1 if set(pred_results) == set(gold_results) else 0
