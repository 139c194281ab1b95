"""Model ratings from pairwise battles: Bradley–Terry on the Elo scale, bootstrap intervals over votes,
style control, online Elo (`playground ratings` reads a file of Chatbot Arena rows; the Dashboard,
the store's battles).

The modules, by job (import each name from the module that holds it; this package re-exports nothing):

    indexed        `Battle` records as index arrays (`index_battles` → `IndexedBattles`)
    newton         σ, the ridge, batched damped Newton: the numerics every logistic fit shares
    bradley_terry  the model: battles aggregated per pair, the fit, the bootstrap over votes (the formulas)
    style          style control: style features, the style-controlled fit and its bootstrap
    online_elo     the sequential Elo shown beside the ratings
    results        `compute_ratings` → `RatingsResult` (leaderboard, matrices, warnings), `to_json`

A run: `compute_ratings(index_battles(battles))`, with `style=style_features(battles)` for style control.
"""
