"""Loss landscapes of fine-tuning (Hao et al. 2019; Mosbach et al. 2021; Li et al. 2018), split by concern:

directions -- parameter-space arithmetic, the planes of Hao, Mosbach and filter-normalized random directions
projection -- least-squares coordinates of checkpoints in a (non-orthogonal) plane
layers     -- low / middle / high layer groups, rollback to the starting values, moving one group
evaluation -- loss and metric of many parameter vectors on fixed data subsets via torch.func.functional_call
compute    -- lines and grids evaluated cell by cell into the store, so an interrupted surface resumes
plotting   -- 1-D curves, contour and 3-D surfaces with the trajectory, rollback curves
"""
